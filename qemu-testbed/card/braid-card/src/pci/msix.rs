//! MSI-X: interrupt delivery through the eventfds QEMU hands over with
//! `VFIO_USER_DEVICE_SET_IRQS`, and the memory behind the MSI-X table and
//! Pending Bit Array.
//!
//! QEMU's vfio-pci emulates the MSI-X table itself (it owns the guest's
//! view of address/data/mask) and gives the card one eventfd per vector it
//! wants signalled; the card raises vector `n` by writing to eventfd `n`.
//! The table BAR is nevertheless backed by real registers here, so a client
//! that does read the BAR gets spec-conformant contents.

use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::{PoisonError, RwLock};

use thiserror::Error;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_TYPE_MASK,
    VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE, VFIO_IRQ_SET_DATA_TYPE_MASK, VFIO_PCI_INTX_IRQ_INDEX,
    VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
};

use super::regs::{MaskedRegisters, OutOfRange};

/// Size of one MSI-X table entry.
pub const TABLE_ENTRY_SIZE: usize = 16;
/// Vector Control: Mask Bit.
pub const VECTOR_CONTROL_MASK: u32 = 1;

/// A `SET_IRQS` request or an interrupt that cannot be carried out.
#[derive(Debug, Error)]
pub enum MsixError {
    /// The IRQ index is not one the function implements.
    #[error("IRQ index {index} is not supported (the function only signals MSI-X)")]
    UnsupportedIndex {
        /// VFIO IRQ index.
        index: u32,
    },
    /// `flags` does not name exactly one known data type and one action.
    #[error("invalid SET_IRQS flags {flags:#x}")]
    InvalidFlags {
        /// The flags received.
        flags: u32,
    },
    /// The action/data combination is not supported for MSI-X.
    #[error("SET_IRQS {what} is not supported for MSI-X")]
    Unsupported {
        /// Which operation.
        what: &'static str,
    },
    /// `start..start + count` is not inside the vector table.
    #[error("vectors {start}..{start}+{count} are outside the {vectors}-entry MSI-X table")]
    OutOfRange {
        /// First vector.
        start: u32,
        /// Number of vectors.
        count: u32,
        /// Table size.
        vectors: u16,
    },
    /// The number of file descriptors does not match `count` (and is not
    /// zero, which would mean "deassign").
    #[error("SET_IRQS for {count} vectors carried {fds} file descriptors")]
    FdCount {
        /// Vectors in the request.
        count: u32,
        /// File descriptors received.
        fds: usize,
    },
    /// A file descriptor meant as an interrupt trigger is not an eventfd.
    #[error("file descriptor for MSI-X vector {vector} is not an eventfd")]
    NotEventFd {
        /// The vector it was meant for.
        vector: u32,
    },
    /// Writing the vector's eventfd failed.
    #[error("signalling MSI-X vector {vector} failed: {source}")]
    Signal {
        /// The vector.
        vector: u16,
        /// The write error.
        #[source]
        source: io::Error,
    },
}

/// Whether `file` is an eventfd, judged by the anonymous-inode name the
/// kernel gives it.
fn is_eventfd(file: &File) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .is_ok_and(|target| target.as_os_str() == "anon_inode:[eventfd]")
}

/// The eventfd that triggers one vector.
#[derive(Debug)]
struct Trigger(File);

impl Trigger {
    fn signal(&self) -> io::Result<()> {
        match (&self.0).write(&1u64.to_ne_bytes()) {
            Ok(_) => Ok(()),
            // A non-blocking eventfd whose counter is saturated already has
            // an interrupt pending: nothing is lost.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(err) => Err(err),
        }
    }
}

/// Whether an interrupt reached an eventfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The vector's eventfd was signalled.
    Signalled,
    /// No eventfd is assigned to the vector (MSI-X disabled or the vector
    /// not in use): the interrupt is dropped, as it would be by VFIO.
    NoTrigger,
}

/// The MSI-X vectors of a function and their trigger eventfds.
#[derive(Debug)]
pub struct MsixVectors {
    triggers: RwLock<Vec<Option<Trigger>>>,
    count: u16,
}

impl MsixVectors {
    /// A table of `count` vectors, none of them assigned.
    pub fn new(count: u16) -> Self {
        Self {
            triggers: RwLock::new((0..count).map(|_| None).collect()),
            count,
        }
    }

    /// Number of vectors.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Whether `vector` has a trigger eventfd.
    pub fn is_assigned(&self, vector: u16) -> bool {
        let triggers = self.triggers.read().unwrap_or_else(PoisonError::into_inner);
        triggers
            .get(usize::from(vector))
            .is_some_and(Option::is_some)
    }

    /// Drops every trigger eventfd (MSI-X disabled, reset or client gone).
    pub fn clear(&self) {
        let mut triggers = self
            .triggers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        triggers.iter_mut().for_each(|trigger| *trigger = None);
    }

    /// Raises `vector` by signalling its eventfd.
    pub fn trigger(&self, vector: u16) -> Result<Delivery, MsixError> {
        let triggers = self.triggers.read().unwrap_or_else(PoisonError::into_inner);
        let slot = triggers
            .get(usize::from(vector))
            .ok_or(MsixError::OutOfRange {
                start: vector.into(),
                count: 1,
                vectors: self.count,
            })?;
        match slot {
            Some(trigger) => trigger
                .signal()
                .map(|()| Delivery::Signalled)
                .map_err(|source| MsixError::Signal { vector, source }),
            None => Ok(Delivery::NoTrigger),
        }
    }

    fn range(&self, start: u32, count: u32) -> Result<Range<usize>, MsixError> {
        let out_of_range = MsixError::OutOfRange {
            start,
            count,
            vectors: self.count,
        };
        let end = start.checked_add(count).ok_or(out_of_range)?;
        if end > u32::from(self.count) {
            return Err(MsixError::OutOfRange {
                start,
                count,
                vectors: self.count,
            });
        }
        // Both bounds are at most `self.count`, a u16.
        Ok(start as usize..end as usize)
    }

    /// Carries out a `VFIO_USER_DEVICE_SET_IRQS` request with the semantics
    /// of `VFIO_DEVICE_SET_IRQS`:
    ///
    /// * MSI-X, `TRIGGER | DATA_EVENTFD`: vectors `start..start + count`
    ///   get the eventfds in `fds`, in order. vfio-user cannot pass the
    ///   kernel API's fd `-1` ("deassign"), so QEMU sends a run of `-1`s as
    ///   a request with no fds at all; that deassigns the vectors.
    /// * MSI-X, `TRIGGER | DATA_NONE` with `count == 0`: disables MSI-X,
    ///   dropping every eventfd.
    /// * MSI-X, `TRIGGER | DATA_NONE` with `count > 0`: fires those vectors
    ///   (the VFIO loopback test).
    /// * INTx and MSI: the function has neither, so only the no-op
    ///   "disable" (`TRIGGER | DATA_NONE`, `count == 0`) is accepted.
    ///
    /// Everything else (other indices, `MASK`/`UNMASK`, `DATA_BOOL`,
    /// malformed flags) is an error.
    pub fn set_irqs(
        &self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> Result<(), MsixError> {
        let data = flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
        let action = flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
        let known = VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK;
        if flags & !known != 0 || data.count_ones() != 1 || action.count_ones() != 1 {
            return Err(MsixError::InvalidFlags { flags });
        }
        if data != VFIO_IRQ_SET_DATA_EVENTFD && !fds.is_empty() {
            return Err(MsixError::FdCount {
                count,
                fds: fds.len(),
            });
        }

        match index {
            VFIO_PCI_MSIX_IRQ_INDEX => {}
            VFIO_PCI_INTX_IRQ_INDEX | VFIO_PCI_MSI_IRQ_INDEX
                if action == VFIO_IRQ_SET_ACTION_TRIGGER
                    && data == VFIO_IRQ_SET_DATA_NONE
                    && count == 0 =>
            {
                return Ok(());
            }
            _ => return Err(MsixError::UnsupportedIndex { index }),
        }

        match action {
            VFIO_IRQ_SET_ACTION_TRIGGER => {}
            VFIO_IRQ_SET_ACTION_MASK => return Err(MsixError::Unsupported { what: "MASK" }),
            VFIO_IRQ_SET_ACTION_UNMASK => return Err(MsixError::Unsupported { what: "UNMASK" }),
            _ => return Err(MsixError::InvalidFlags { flags }),
        }

        match data {
            VFIO_IRQ_SET_DATA_NONE if count == 0 => {
                self.clear();
                Ok(())
            }
            VFIO_IRQ_SET_DATA_NONE => {
                for vector in self.range(start, count)? {
                    // `range` bounds vectors by the u16 table size.
                    self.trigger(vector as u16)?;
                }
                Ok(())
            }
            VFIO_IRQ_SET_DATA_EVENTFD => self.assign(start, count, fds),
            VFIO_IRQ_SET_DATA_BOOL => Err(MsixError::Unsupported { what: "DATA_BOOL" }),
            _ => Err(MsixError::InvalidFlags { flags }),
        }
    }

    fn assign(&self, start: u32, count: u32, fds: Vec<File>) -> Result<(), MsixError> {
        let range = self.range(start, count)?;
        if !fds.is_empty() && fds.len() != range.len() {
            return Err(MsixError::FdCount {
                count,
                fds: fds.len(),
            });
        }
        if let Some(bad) = fds.iter().position(|fd| !is_eventfd(fd)) {
            return Err(MsixError::NotEventFd {
                vector: start + bad as u32,
            });
        }

        let mut triggers = self
            .triggers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let slots = &mut triggers[range];
        if fds.is_empty() {
            slots.iter_mut().for_each(|slot| *slot = None);
        } else {
            for (slot, fd) in slots.iter_mut().zip(fds) {
                *slot = Some(Trigger(fd));
            }
        }
        Ok(())
    }
}

/// The registers behind the MSI-X table and Pending Bit Array in their BAR.
///
/// Each table entry is Message Address (low, with bits 1:0 reserved),
/// Message Upper Address, Message Data and Vector Control, whose Mask Bit
/// powers on set. The PBA is read-only. Anything else in the BAR reads as
/// zero and ignores writes.
#[derive(Debug, Clone)]
pub struct MsixTable {
    regs: MaskedRegisters,
}

/// MSI-X table/PBA placement that does not fit in its BAR.
#[derive(Debug, Clone, Error)]
#[error(
    "invalid MSI-X layout: {vectors} vectors (1 to 2048), table at {table_offset:#x} and PBA at {pba_offset:#x} must fit a {bar_size:#x}-byte BAR without overlapping"
)]
pub struct MsixLayoutError {
    /// Number of vectors.
    pub vectors: u16,
    /// Table offset.
    pub table_offset: usize,
    /// PBA offset.
    pub pba_offset: usize,
    /// BAR size.
    pub bar_size: usize,
}

impl MsixTable {
    /// Size of the Pending Bit Array for `vectors` vectors (whole qwords).
    pub fn pba_size(vectors: u16) -> usize {
        usize::from(vectors).div_ceil(64) * 8
    }

    /// Registers for a BAR of `bar_size` bytes holding a `vectors`-entry
    /// table at `table_offset` and the PBA at `pba_offset`.
    pub fn new(
        vectors: u16,
        bar_size: usize,
        table_offset: usize,
        pba_offset: usize,
    ) -> Result<Self, MsixLayoutError> {
        let layout_error = || MsixLayoutError {
            vectors,
            table_offset,
            pba_offset,
            bar_size,
        };
        if vectors == 0 || vectors > super::capability::msix::MAX_VECTORS {
            return Err(layout_error());
        }
        let table = table_offset..table_offset + usize::from(vectors) * TABLE_ENTRY_SIZE;
        let pba = pba_offset..pba_offset + Self::pba_size(vectors);
        let overlap = table.start < pba.end && pba.start < table.end;
        if table.end > bar_size || pba.end > bar_size || overlap {
            return Err(layout_error());
        }

        let mut regs = MaskedRegisters::new(bar_size);
        let init = |regs: &mut MaskedRegisters| -> Result<(), OutOfRange> {
            for entry in table.clone().step_by(TABLE_ENTRY_SIZE) {
                regs.set_writable_u32(entry, !0x3)?;
                regs.set_writable_u32(entry + 4, !0)?;
                regs.set_writable_u32(entry + 8, !0)?;
                regs.set_writable_u32(entry + 12, VECTOR_CONTROL_MASK)?;
                regs.set_u32(entry + 12, VECTOR_CONTROL_MASK)?;
            }
            Ok(())
        };
        init(&mut regs).map_err(|_| layout_error())?;
        regs.seal();
        Ok(Self { regs })
    }

    /// Guest read of the BAR.
    pub fn read(&self, offset: u64, data: &mut [u8]) -> Result<(), OutOfRange> {
        self.regs.read(offset, data)
    }

    /// Guest write of the BAR.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), OutOfRange> {
        self.regs.write(offset, data)
    }

    /// Restores the power-on state: every vector masked, nothing pending.
    pub fn reset(&mut self) {
        self.regs.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{FromRawFd, IntoRawFd};
    use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

    /// An eventfd for the card side, and the card-side `File` QEMU would
    /// have sent for it.
    fn eventfd_pair() -> (EventFd, File) {
        let efd = EventFd::new(EFD_NONBLOCK).unwrap();
        let dup = efd.try_clone().unwrap();
        // SAFETY: `into_raw_fd` hands over sole ownership of a valid fd.
        let file = unsafe { File::from_raw_fd(dup.into_raw_fd()) };
        (efd, file)
    }

    const TRIGGER_EVENTFD: u32 = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD;
    const TRIGGER_NONE: u32 = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE;

    #[test]
    fn eventfd_delivery() {
        let msix = MsixVectors::new(4);
        let (efd1, file1) = eventfd_pair();
        let (efd2, file2) = eventfd_pair();
        msix.set_irqs(
            VFIO_PCI_MSIX_IRQ_INDEX,
            TRIGGER_EVENTFD,
            1,
            2,
            vec![file1, file2],
        )
        .unwrap();

        assert_eq!(msix.trigger(0).unwrap(), Delivery::NoTrigger);
        assert_eq!(msix.trigger(2).unwrap(), Delivery::Signalled);
        assert_eq!(msix.trigger(2).unwrap(), Delivery::Signalled);
        assert_eq!(efd2.read().unwrap(), 2);
        assert!(efd1.read().is_err(), "vector 1 was not raised");
        assert!(matches!(
            msix.trigger(4),
            Err(MsixError::OutOfRange { start: 4, .. })
        ));
    }

    #[test]
    fn loopback_trigger_with_data_none() {
        let msix = MsixVectors::new(2);
        let (efd, file) = eventfd_pair();
        msix.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, TRIGGER_EVENTFD, 1, 1, vec![file])
            .unwrap();
        msix.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, TRIGGER_NONE, 0, 2, vec![])
            .unwrap();
        assert_eq!(efd.read().unwrap(), 1);
    }

    #[test]
    fn deassign_and_disable() {
        let msix = MsixVectors::new(3);
        let (_a, fa) = eventfd_pair();
        let (_b, fb) = eventfd_pair();
        let (_c, fc) = eventfd_pair();
        msix.set_irqs(
            VFIO_PCI_MSIX_IRQ_INDEX,
            TRIGGER_EVENTFD,
            0,
            3,
            vec![fa, fb, fc],
        )
        .unwrap();

        // A run of "-1" fds arrives as a request without fds.
        msix.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, TRIGGER_EVENTFD, 1, 1, vec![])
            .unwrap();
        assert!(msix.is_assigned(0));
        assert!(!msix.is_assigned(1));
        assert!(msix.is_assigned(2));

        // DATA_NONE with count 0 disables everything.
        msix.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, TRIGGER_NONE, 0, 0, vec![])
            .unwrap();
        assert!((0..3).all(|v| !msix.is_assigned(v)));
        assert_eq!(msix.trigger(0).unwrap(), Delivery::NoTrigger);
    }

    #[test]
    fn invalid_requests_are_errors() {
        let msix = MsixVectors::new(2);
        let (_e, file) = eventfd_pair();
        assert!(matches!(
            msix.set_irqs(7, TRIGGER_EVENTFD, 0, 1, vec![]),
            Err(MsixError::UnsupportedIndex { index: 7 })
        ));
        assert!(matches!(
            msix.set_irqs(VFIO_PCI_INTX_IRQ_INDEX, TRIGGER_EVENTFD, 0, 1, vec![]),
            Err(MsixError::UnsupportedIndex { .. })
        ));
        // Disabling the absent INTx/MSI is a harmless no-op.
        msix.set_irqs(VFIO_PCI_INTX_IRQ_INDEX, TRIGGER_NONE, 0, 0, vec![])
            .unwrap();
        assert!(matches!(
            msix.set_irqs(
                VFIO_PCI_MSIX_IRQ_INDEX,
                VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE,
                0,
                1,
                vec![]
            ),
            Err(MsixError::Unsupported { what: "MASK" })
        ));
        assert!(matches!(
            msix.set_irqs(
                VFIO_PCI_MSIX_IRQ_INDEX,
                VFIO_IRQ_SET_DATA_NONE,
                0,
                0,
                vec![]
            ),
            Err(MsixError::InvalidFlags { .. })
        ));
        assert!(matches!(
            msix.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, TRIGGER_EVENTFD, 1, 2, vec![]),
            Err(MsixError::OutOfRange { .. })
        ));
        assert!(matches!(
            msix.set_irqs(
                VFIO_PCI_MSIX_IRQ_INDEX,
                TRIGGER_EVENTFD,
                u32::MAX,
                2,
                vec![]
            ),
            Err(MsixError::OutOfRange { .. })
        ));
        assert!(matches!(
            msix.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, TRIGGER_EVENTFD, 0, 2, vec![file]),
            Err(MsixError::FdCount { count: 2, fds: 1 })
        ));
    }

    #[test]
    fn non_eventfd_is_rejected() {
        let msix = MsixVectors::new(1);
        let file = File::open("/proc/self/status").unwrap();
        assert!(matches!(
            msix.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, TRIGGER_EVENTFD, 0, 1, vec![file]),
            Err(MsixError::NotEventFd { vector: 0 })
        ));
    }

    #[test]
    fn table_registers() {
        let mut table = MsixTable::new(9, 0x4000, 0, 0x2000).unwrap();
        let mut word = [0u8; 4];
        table.read(12, &mut word).unwrap();
        assert_eq!(u32::from_le_bytes(word), VECTOR_CONTROL_MASK);

        table.write(0, &0xffff_ffffu32.to_le_bytes()).unwrap();
        table.read(0, &mut word).unwrap();
        assert_eq!(u32::from_le_bytes(word), 0xffff_fffc);

        // Entries past the table and the PBA are read-only.
        table.write(9 * 16, &[0xff; 4]).unwrap();
        table.write(0x2000, &[0xff; 8]).unwrap();
        table.read(9 * 16, &mut word).unwrap();
        assert_eq!(word, [0; 4]);
        table.read(0x2000, &mut word).unwrap();
        assert_eq!(word, [0; 4]);

        table.reset();
        table.read(0, &mut word).unwrap();
        assert_eq!(word, [0; 4]);
        assert!(table.read(0x4000, &mut word).is_err());
        assert!(MsixTable::new(600, 0x4000, 0, 0x2000).is_err());
        assert!(MsixTable::new(0, 0x4000, 0, 0x2000).is_err());
    }
}
