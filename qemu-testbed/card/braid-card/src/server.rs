//! The vfio-user front end: one listening socket per function, serving one
//! QEMU connection at a time, for as long as the card runs.
//!
//! When a client disconnects (QEMU quit, crashed or hot-unplugged the
//! device), the function drops the client's DMA mappings and eventfds and
//! resets, then waits for the next client.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tracing::{debug, error, info, warn};
use vfio_user::{DmaMapFlags, DmaUnmapFlags, Server, ServerBackend};

use crate::function::Function;

/// Why a function cannot be served.
#[derive(Debug, Error)]
pub enum ServeError {
    /// Another process is listening on the socket path.
    #[error("socket {path} is in use by another process (is another braid-card running?)")]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The path exists and is not a socket.
    #[error("{path} already exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Inspecting or removing an existing path failed.
    #[error("cannot {what} {path}: {source}")]
    Path {
        /// What was attempted.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Binding the listening socket failed.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The vfio-user error.
        #[source]
        source: vfio_user::Error,
    },
    /// Accepting a connection failed.
    #[error("cannot accept connections on {path}: {source}")]
    Accept {
        /// The socket path.
        path: PathBuf,
        /// The vfio-user error.
        #[source]
        source: vfio_user::Error,
    },
}

/// Makes `path` available for a new listening socket: a missing path is
/// fine, a stale socket nobody listens on is removed, anything else is an
/// error.
pub(crate) fn claim_socket_path(path: &Path) -> Result<(), ServeError> {
    let path_error = |what, source| ServeError::Path {
        what,
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(path_error("inspect", err)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServeError::NotASocket {
            path: path.to_owned(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServeError::SocketInUse {
            path: path.to_owned(),
        }),
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
            warn!(path = %path.display(), "removing stale socket");
            std::fs::remove_file(path).map_err(|err| path_error("remove stale socket", err))
        }
        Err(err) => Err(path_error("probe existing socket", err)),
    }
}

/// Adapts a [`Function`] to the vfio-user server's callbacks, logging every
/// refused request (the vfio-user crate reports backend errors to the
/// client without an errno).
struct Backend<'a> {
    function: &'a Function,
}

fn refuse(what: &str, err: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    warn!(error = %err, "{what} refused");
    io::Error::other(err)
}

impl ServerBackend for Backend<'_> {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        self.function
            .region_read(region, offset, data)
            .map_err(|err| refuse("region read", err))
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        self.function
            .region_write(region, offset, data)
            .map_err(|err| refuse("region write", err))
    }

    fn dma_map(
        &mut self,
        flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> io::Result<()> {
        self.function
            .dma()
            .map(flags.bits(), offset, address, size, fd)
            .map_err(|err| {
                if err.refuses_guest() {
                    error!(function = %self.function.kind(), error = %err, "refusing guest memory");
                    io::Error::other(err)
                } else {
                    refuse("DMA map", err)
                }
            })
    }

    fn dma_unmap(&mut self, flags: DmaUnmapFlags, address: u64, size: u64) -> io::Result<()> {
        // The crate's flag names do not match the wire values QEMU sends
        // (those of linux/vfio.h); pass the raw bits on.
        self.function
            .dma()
            .unmap(flags.bits(), address, size)
            .map_err(|err| refuse("DMA unmap", err))
    }

    fn reset(&mut self) -> io::Result<()> {
        self.function.reset();
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> io::Result<()> {
        debug!(index, flags, start, count, fds = fds.len(), "SET_IRQS");
        self.function
            .set_irqs(index, flags, start, count, fds)
            .map_err(|err| refuse("SET_IRQS", err))
    }
}

/// A function listening on its vfio-user socket.
pub struct FunctionServer {
    function: Arc<Function>,
    server: Server,
    path: PathBuf,
}

impl std::fmt::Debug for FunctionServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionServer")
            .field("function", &self.function.kind())
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FunctionServer {
    /// Starts listening for `function` on the Unix socket `path`.
    pub fn bind(path: &Path, function: Arc<Function>) -> Result<Self, ServeError> {
        claim_socket_path(path)?;
        let server =
            Server::new(path, true, function.irqs(), function.regions()).map_err(|source| {
                ServeError::Bind {
                    path: path.to_owned(),
                    source,
                }
            })?;
        info!(function = %function.kind(), path = %path.display(), "listening");
        Ok(Self {
            function,
            server,
            path: path.to_owned(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The function being served.
    pub fn function(&self) -> &Arc<Function> {
        &self.function
    }

    /// Serves one client from connection to disconnect, then returns the
    /// function to its power-on state. Only failing to accept a connection
    /// is an error; whatever happens on an accepted connection ends that
    /// connection only.
    pub fn serve_one(&self) -> Result<(), ServeError> {
        let kind = self.function.kind();
        let mut backend = Backend {
            function: &self.function,
        };
        // The vfio-user crate panics on some malformed client messages;
        // contain that to the connection instead of losing the function.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| self.server.run(&mut backend)));
        let result = match outcome {
            Ok(Ok(())) => {
                info!(function = %kind, "client disconnected");
                Ok(())
            }
            Ok(Err(source @ vfio_user::Error::SocketAccept(_))) => Err(ServeError::Accept {
                path: self.path.clone(),
                source,
            }),
            Ok(Err(err)) => {
                warn!(function = %kind, error = %err, "connection ended with an error");
                Ok(())
            }
            Err(_) => {
                error!(function = %kind, "connection handler panicked; dropping the client");
                Ok(())
            }
        };
        self.function.disconnect();
        result
    }

    /// Serves clients one after another; returns only when accepting a
    /// connection fails.
    pub fn serve(&self) -> ServeError {
        loop {
            if let Err(err) = self.serve_one() {
                return err;
            }
        }
    }
}
