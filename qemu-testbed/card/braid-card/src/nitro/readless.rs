//! Read-less register reads, as ENA and EFA drivers do every register read
//! (`ena_com_reg_bar_read32`, `efa_com_reg_read32`): the driver writes
//! `{req_id 15:0, reg_off 31:16}` to `MMIO_REG_READ` and polls the
//! `*_mmio_req_read_less_resp` {u16 req_id, u16 reg_off, u32 value} at the
//! address it programmed in `MMIO_RESP_LO/HI` until the request id shows.

use std::sync::atomic::{Ordering, fence};

use super::regs::bar0::{MMIO_REG_READ_REG_OFF, MMIO_REG_READ_REQ_ID};
use crate::dma::{DmaError, GuestDma};

/// Why a read-less response was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum ReadlessError {
    /// The driver has not programmed `MMIO_RESP` (or a reset cleared it).
    #[error("read-less read of {reg_off:#x} (req {req_id}) with no response address")]
    NoAddress {
        /// The request id.
        req_id: u16,
        /// The register offset.
        reg_off: u16,
    },
    /// The response address is not writable guest memory.
    #[error("read-less response for {reg_off:#x} (req {req_id}) not delivered: {source}")]
    Dma {
        /// The request id.
        req_id: u16,
        /// The register offset.
        reg_off: u16,
        /// The DMA error.
        #[source]
        source: DmaError,
    },
}

/// Serves the request written to `MMIO_REG_READ`: reads the register with
/// `register` and DMA-writes the response to `address`, the request id
/// last, so the driver never sees the id before the value.
pub fn respond(
    dma: &GuestDma,
    address: u64,
    request: u32,
    register: impl FnOnce(u64) -> u32,
) -> Result<(), ReadlessError> {
    let req_id = MMIO_REG_READ_REQ_ID.get(request) as u16;
    let reg_off = MMIO_REG_READ_REG_OFF.get(request) as u16;
    if address == 0 {
        return Err(ReadlessError::NoAddress { req_id, reg_off });
    }
    let value = register(u64::from(reg_off));
    let mut body = [0u8; 6];
    body[..2].copy_from_slice(&reg_off.to_le_bytes());
    body[2..].copy_from_slice(&value.to_le_bytes());
    dma.write_slice(address.wrapping_add(2), &body)
        .and_then(|()| {
            fence(Ordering::Release);
            dma.write_slice(address, &req_id.to_le_bytes())
        })
        .map_err(|source| ReadlessError::Dma {
            req_id,
            reg_off,
            source,
        })
}
