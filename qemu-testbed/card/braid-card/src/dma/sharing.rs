//! Detecting guest memory that QEMU maps privately.
//!
//! With `-object memory-backend-memfd,share=off` QEMU still creates a memfd
//! and still sends its fd with every DMA map, but maps it `MAP_PRIVATE`:
//! the guest then writes into QEMU's private copy-on-write pages and the
//! card, mapping the fd `MAP_SHARED`, silently sees different memory. The
//! fd itself cannot tell how others map it, so the card looks at
//! `/proc/*/maps` for mappings of the same inode whose permissions say
//! private (`p`) rather than shared (`s`).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;

/// Identity of a file as `/proc/PID/maps` reports it: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// Major number of the device holding the inode.
    pub major: u32,
    /// Minor number of the device holding the inode.
    pub minor: u32,
    /// Inode number.
    pub inode: u64,
}

impl FileId {
    /// The identity of an open file (`fstat`).
    pub fn of(file: &File) -> io::Result<Self> {
        let meta = file.metadata()?;
        let dev = meta.dev();
        Ok(Self {
            major: libc::major(dev),
            minor: libc::minor(dev),
            inode: meta.ino(),
        })
    }
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapsEntry<'a> {
    /// Start of the mapping (inclusive).
    pub start: u64,
    /// End of the mapping (exclusive).
    pub end: u64,
    /// Permissions, e.g. `rw-s`.
    pub perms: &'a str,
    /// Offset into the file.
    pub offset: u64,
    /// The mapped file.
    pub file: FileId,
    /// Path or pseudo-path; empty for anonymous memory.
    pub path: &'a str,
}

impl<'a> MapsEntry<'a> {
    /// Parses `start-end perms offset major:minor inode [path]`.
    pub fn parse(line: &'a str) -> Option<Self> {
        let mut fields = line.splitn(6, ' ');
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?;
        let offset = fields.next()?;
        let (major, minor) = fields.next()?.split_once(':')?;
        let inode = fields.next()?;
        let path = fields.next().unwrap_or("").trim_start();
        if perms.len() != 4 {
            return None;
        }
        Some(Self {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            perms,
            offset: u64::from_str_radix(offset, 16).ok()?,
            file: FileId {
                major: u32::from_str_radix(major, 16).ok()?,
                minor: u32::from_str_radix(minor, 16).ok()?,
                inode: inode.parse().ok()?,
            },
            path,
        })
    }

    /// Whether the mapping is private (copy-on-write).
    pub fn is_private(&self) -> bool {
        self.perms.as_bytes().get(3) == Some(&b'p')
    }
}

/// A private mapping of a file in some process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateMapping {
    /// Process holding the mapping.
    pub pid: u32,
    /// The process's command name (`/proc/PID/comm`).
    pub comm: String,
    /// Start of the mapping.
    pub start: u64,
    /// End of the mapping (exclusive).
    pub end: u64,
    /// Path the mapping shows (for a memfd, `/memfd:NAME (deleted)`).
    pub path: String,
}

/// Lists the private mappings of `file` in every process whose maps are
/// readable, skipping `skip_pid` (the card itself).
///
/// Processes that exit during the scan, or whose maps cannot be read, are
/// skipped; only failing to list `/proc` is an error.
pub fn find_private_mappings(
    file: FileId,
    skip_pid: Option<u32>,
) -> io::Result<Vec<PrivateMapping>> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if Some(pid) == skip_pid {
            continue;
        }
        let Ok(maps) = fs::read_to_string(entry.path().join("maps")) else {
            continue;
        };
        let mut comm = None;
        for mapping in maps
            .lines()
            .filter_map(MapsEntry::parse)
            .filter(|m| m.file == file && m.is_private())
        {
            let comm = comm
                .get_or_insert_with(|| {
                    fs::read_to_string(entry.path().join("comm"))
                        .map(|c| c.trim_end().to_owned())
                        .unwrap_or_default()
                })
                .clone();
            found.push(PrivateMapping {
                pid,
                comm,
                start: mapping.start,
                end: mapping.end,
                path: mapping.path.to_owned(),
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memfd;
    use std::os::fd::AsRawFd;
    use std::ptr;

    #[test]
    fn parses_maps_lines() {
        let line = "7f12a0000000-7f12a4000000 rw-s 00200000 00:01 4242                       /memfd:pc.ram (deleted)";
        let entry = MapsEntry::parse(line).unwrap();
        assert_eq!(entry.start, 0x7f12_a000_0000);
        assert_eq!(entry.end, 0x7f12_a400_0000);
        assert_eq!(entry.offset, 0x20_0000);
        assert_eq!(
            entry.file,
            FileId {
                major: 0,
                minor: 1,
                inode: 4242
            }
        );
        assert_eq!(entry.path, "/memfd:pc.ram (deleted)");
        assert!(!entry.is_private());

        let anon = MapsEntry::parse("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 ").unwrap();
        assert!(anon.is_private());
        assert_eq!(anon.path, "");

        assert!(MapsEntry::parse("garbage").is_none());
        assert!(MapsEntry::parse("1-2 rw 0 00:00 0").is_none());
    }

    /// Maps `file` into this process with `flags`, returning the address.
    fn map(file: &File, len: usize, flags: libc::c_int) -> *mut libc::c_void {
        // SAFETY: a fresh mapping chosen by the kernel (no MAP_FIXED) of a
        // valid fd; nothing is dereferenced here.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED, "{}", io::Error::last_os_error());
        addr
    }

    fn unmap(addr: *mut libc::c_void, len: usize) {
        // SAFETY: `addr`/`len` describe a mapping created by `map` that no
        // reference points into.
        assert_eq!(unsafe { libc::munmap(addr, len) }, 0);
    }

    #[test]
    fn detects_private_but_not_shared_mappings() {
        let len = 4096;
        let file = memfd::create("braid-share-test", len as u64, false).unwrap();
        let id = FileId::of(&file).unwrap();
        let me = std::process::id();

        let shared = map(&file, len, libc::MAP_SHARED);
        assert_eq!(find_private_mappings(id, None).unwrap(), vec![]);

        let private = map(&file, len, libc::MAP_PRIVATE);
        let found = find_private_mappings(id, None).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, me);
        assert_eq!(found[0].start, private as u64);
        assert!(found[0].path.starts_with("/memfd:braid-share-test"));

        // The card skips itself.
        assert_eq!(find_private_mappings(id, Some(me)).unwrap(), vec![]);

        unmap(private, len);
        unmap(shared, len);
        assert_eq!(find_private_mappings(id, None).unwrap(), vec![]);
    }
}
