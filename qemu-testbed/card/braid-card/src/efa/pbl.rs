//! Reading a memory registration's page list (`efa_verbs.c`'s PBL), in the
//! three forms `efa_register_mr` builds:
//!
//! * **inline**: up to four page addresses in the command itself;
//! * **direct** (`ctrl_data`): a control buffer holding every page address
//!   (`u64` each), physically contiguous;
//! * **indirect** (`ctrl_data | ctrl_data_indirect`): the page-address
//!   buffer is itself split into 4 KiB pages, whose addresses sit in a
//!   chain of 4 KiB chunks: each chunk holds up to 510 addresses and, at
//!   byte 4080, the `efa_admin_ctrl_buff_info` {length, address} of the
//!   next chunk. The command points at the first chunk.
//!
//! Every length is checked against the page count before anything is
//! read, so a driver cannot make the card read more than the count calls
//! for, loop on a chunk chain, or read outside guest memory.

use super::admin::layout::reg_mr as f;
use crate::dma::GuestDma;
use crate::nitro::admin::{Entry, Refused, aq};

/// Addresses per chunk (`EFA_PTRS_PER_CHUNK`).
pub const PTRS_PER_CHUNK: usize = (CHUNK_SIZE - CTRL_BUFF_INFO_SIZE) / 8;
/// Chunk size (`EFA_CHUNK_SIZE`), and the size of each page of the
/// indirect page-address buffer (`EFA_CHUNK_PAYLOAD_SIZE`).
pub const CHUNK_SIZE: usize = 4096;
/// `sizeof(struct efa_admin_ctrl_buff_info)`.
pub const CTRL_BUFF_INFO_SIZE: usize = 12;
/// Page addresses in one 4 KiB page of the page-address buffer.
const PTRS_PER_PAGE: usize = CHUNK_SIZE / 8;

fn malformed(reason: impl Into<String>) -> Refused {
    Refused::malformed(reason)
}

fn read_u64s(dma: &GuestDma, address: u64, count: usize, what: &str) -> Result<Vec<u64>, Refused> {
    let mut bytes = vec![0u8; count * 8];
    dma.read_slice(address, &mut bytes)
        .map_err(|err| Refused::dma(what, &err))?;
    Ok(bytes
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect())
}

/// The `page_num` page addresses of the REG_MR command `cmd`, submitted
/// with descriptor `flags`.
pub fn read(cmd: &Entry, flags: u8, page_num: u32, dma: &GuestDma) -> Result<Vec<u64>, Refused> {
    let count = page_num as usize;
    if flags & aq::FLAG_CTRL_DATA == 0 {
        if flags & aq::FLAG_CTRL_DATA_INDIRECT != 0 {
            return Err(malformed("indirect page list without a control buffer"));
        }
        if count > f::INLINE_PAGES {
            return Err(malformed(format!(
                "{count} pages do not fit the inline list of {}",
                f::INLINE_PAGES
            )));
        }
        return Ok((0..count).map(|i| cmd.u64(f::PBL + 8 * i)).collect());
    }
    let length = cmd.u32(f::PBL) as usize;
    let address = cmd.u64(f::PBL + 4);
    if flags & aq::FLAG_CTRL_DATA_INDIRECT == 0 {
        if length != count * 8 {
            return Err(malformed(format!(
                "direct page list of {length} bytes for {count} pages"
            )));
        }
        return read_u64s(dma, address, count, "reading the page list");
    }
    indirect(length, address, count, dma)
}

fn indirect(
    mut length: usize,
    mut address: u64,
    count: usize,
    dma: &GuestDma,
) -> Result<Vec<u64>, Refused> {
    let buffer_pages = (count * 8).div_ceil(CHUNK_SIZE);
    let mut buffer_addrs = Vec::with_capacity(buffer_pages);
    while buffer_addrs.len() < buffer_pages {
        let left = buffer_pages - buffer_addrs.len();
        let in_chunk = left.min(PTRS_PER_CHUNK);
        let expected = in_chunk * 8 + CTRL_BUFF_INFO_SIZE;
        if length != expected {
            return Err(malformed(format!(
                "page-list chunk {} of {length} bytes, expected {expected}",
                buffer_addrs.len() / PTRS_PER_CHUNK
            )));
        }
        buffer_addrs.extend(read_u64s(
            dma,
            address,
            in_chunk,
            "reading a page-list chunk",
        )?);
        if in_chunk == left {
            break;
        }
        // The next chunk's ctrl_buff_info trails a full chunk.
        let mut next = [0u8; CTRL_BUFF_INFO_SIZE];
        dma.read_slice(address.wrapping_add((PTRS_PER_CHUNK * 8) as u64), &mut next)
            .map_err(|err| Refused::dma("reading a chunk link", &err))?;
        length = u32::from_le_bytes([next[0], next[1], next[2], next[3]]) as usize;
        address = u64::from_le_bytes([
            next[4], next[5], next[6], next[7], next[8], next[9], next[10], next[11],
        ]);
    }
    let mut pages = Vec::with_capacity(count);
    for page in buffer_addrs {
        let n = (count - pages.len()).min(PTRS_PER_PAGE);
        pages.extend(read_u64s(dma, page, n, "reading a page-list page")?);
    }
    Ok(pages)
}
