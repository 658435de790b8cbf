//! Anonymous shared-memory files (`memfd_create(2)`).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

/// Creates a memfd called `name` of `size` bytes.
///
/// With `seal_size`, the size is sealed (`F_SEAL_SHRINK | F_SEAL_GROW`,
/// then `F_SEAL_SEAL`): whoever the fd is shared with cannot truncate it
/// under the card's mappings, which would turn card accesses into SIGBUS.
pub fn create(name: &str, size: u64, seal_size: bool) -> io::Result<File> {
    let c_name = CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "memfd name contains a NUL byte",
        )
    })?;
    let mut flags = libc::MFD_CLOEXEC;
    if seal_size {
        flags |= libc::MFD_ALLOW_SEALING;
    }
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the
    // call; memfd_create has no other memory-safety preconditions.
    let fd = unsafe { libc::memfd_create(c_name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create and nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)?;

    if seal_size {
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: F_ADD_SEALS takes an integer argument; `file` keeps the fd
        // open for the duration of the call.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_memfd_keeps_its_size() {
        let file = create("braid-test", 8192, true).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 8192);
        assert!(file.set_len(4096).is_err());
        assert!(file.set_len(16384).is_err());

        let unsealed = create("braid-test", 4096, false).unwrap();
        unsealed.set_len(8192).unwrap();
    }
}
