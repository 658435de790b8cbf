//! What the ENA and EFA functions share, as the two upstream drivers do
//! (`ena_com.c` and `efa_com.c` speak one protocol): the control registers
//! ([`regs`]), the admin submission/completion queues ([`admin`]), the
//! asynchronous event queue ([`aenq`]), device reset and the keep-alive
//! timer ([`control`]) and read-less register reads
//! ([`readless`]).

pub mod admin;
pub mod aenq;
pub mod control;
pub mod readless;
pub mod regs;
