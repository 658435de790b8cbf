//! The card operator's handle on an ENA function: what a cable pull, a
//! failing device or a stuck firmware look like to the driver, and the
//! function's counters. Every change goes through the function's state
//! lock, like a register write.
//!
//! * Link: a property of the port, not of the driver's session, so device
//!   and function resets keep it. A change posts a LINK_CHANGE event (now
//!   if the AENQ is armed, else when the driver arms it); while the link
//!   is down, transmitted packets are completed but dropped (counted in
//!   `tx_drops`) and frames for the function are lost before they reach
//!   it (not counted).
//! * Fatal error: `DEV_STS.FATAL_ERROR` is set, a FATAL_ERROR event is
//!   posted if the driver enabled that group, keep-alives stop and the
//!   data path stops serving the function (doorbells are not read, frames
//!   are lost), until the driver resets the device through `DEV_CTL` (or a
//!   function reset). The admin queue and read-less register reads keep
//!   working, so the driver can tear down and re-initialize.
//! * Keep-alive pause: only the keep-alive events stop; the device works.
//!   Resets keep the pause, so the driver's watchdog keeps firing until
//!   the operator resumes the events.

use std::sync::{Arc, OnceLock, Weak};

use thiserror::Error;
use tracing::info;

use super::aenq::Event;
use super::{Counters, Shared, regs};

/// The operator's handle on one ENA function. Cloning it gives another
/// handle on the same function.
#[derive(Debug, Clone, Default)]
pub struct EnaControl {
    /// Filled when the function's registers are built.
    pub(super) shared: Arc<OnceLock<Weak<Shared>>>,
}

/// Why an operator request could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControlError {
    /// The function's registers were never built, or are gone.
    #[error("the function is not running")]
    NotRunning,
}

/// The keep-alive events as the operator sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// The driver has not armed the AENQ with the keep-alive group yet.
    Idle,
    /// Events flow, one per period.
    Running,
    /// The operator paused them.
    Paused,
    /// The device failed: no events until a reset.
    Stopped,
}

/// The device's state as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Ready (DEV_STS.READY).
    Ready,
    /// The driver holds the device in reset.
    Resetting,
    /// A fatal error was injected and no reset followed yet.
    Fatal,
}

/// A snapshot of an ENA function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnaStatus {
    /// The permanent MAC address.
    pub mac: [u8; 6],
    /// The port's link.
    pub link_up: bool,
    /// The keep-alive events.
    pub keep_alive: KeepAlive,
    /// The device.
    pub device: DeviceState,
    /// The device counters (cumulative since the last reset).
    pub counters: Counters,
    /// A link event waits for the driver to arm the AENQ (or for a free
    /// slot in it).
    pub link_event_pending: bool,
}

/// What a link request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOutcome {
    /// The link already was in that state: nothing happened.
    Unchanged,
    /// The link changed and the event reached the AENQ.
    Reported,
    /// The link changed; the event is posted once the driver arms the
    /// AENQ with the link group enabled (or frees a slot).
    Pending,
}

/// What a fatal-error request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatalOutcome {
    /// The device already was in the fatal state.
    AlreadyFatal,
    /// The device failed and the FATAL_ERROR event reached the AENQ.
    Reported,
    /// The device failed; no event (the AENQ is not armed or the group is
    /// not enabled): the driver finds out from the missing keep-alives.
    Silent,
}

impl EnaControl {
    fn shared(&self) -> Result<Arc<Shared>, ControlError> {
        self.shared
            .get()
            .and_then(Weak::upgrade)
            .ok_or(ControlError::NotRunning)
    }

    /// The function's current state.
    pub fn status(&self) -> Result<EnaStatus, ControlError> {
        let shared = self.shared()?;
        let state = shared.lock();
        let device = if state.fatal {
            DeviceState::Fatal
        } else if state.control.dev_sts & regs::DEV_STS_RESET_IN_PROGRESS != 0 {
            DeviceState::Resetting
        } else {
            DeviceState::Ready
        };
        let keep_alive = if state.fatal {
            KeepAlive::Stopped
        } else if state.keep_alive_paused {
            KeepAlive::Paused
        } else if state.timer_running {
            KeepAlive::Running
        } else {
            KeepAlive::Idle
        };
        Ok(EnaStatus {
            mac: state.settings.mac,
            link_up: state.link_up,
            keep_alive,
            device,
            counters: state.counters,
            link_event_pending: state.link_event_pending,
        })
    }

    /// Sets the port's link and reports a change to the driver.
    pub fn set_link(&self, up: bool) -> Result<LinkOutcome, ControlError> {
        let shared = self.shared()?;
        let mut state = shared.lock();
        if state.link_up == up {
            return Ok(LinkOutcome::Unchanged);
        }
        state.link_up = up;
        state.link_event_pending = true;
        info!(link = if up { "up" } else { "down" }, "operator: link");
        if state.flush_link_event(&shared.bus) {
            state.signal(&shared.bus);
            Ok(LinkOutcome::Reported)
        } else {
            Ok(LinkOutcome::Pending)
        }
    }

    /// Fails the device as hardware would (see the module documentation).
    pub fn fatal_error(&self) -> Result<FatalOutcome, ControlError> {
        let shared = self.shared()?;
        let mut state = shared.lock();
        if state.fatal {
            return Ok(FatalOutcome::AlreadyFatal);
        }
        state.fatal = true;
        state.control.dev_sts |= regs::DEV_STS_FATAL_ERROR;
        info!("operator: fatal error");
        if state.post(&shared.bus, Event::FatalError) {
            state.signal(&shared.bus);
            Ok(FatalOutcome::Reported)
        } else {
            Ok(FatalOutcome::Silent)
        }
    }

    /// Pauses (`paused`) or resumes keep-alive events; returns whether the
    /// setting changed.
    pub fn set_keep_alive_paused(&self, paused: bool) -> Result<bool, ControlError> {
        let shared = self.shared()?;
        let mut state = shared.lock();
        if state.keep_alive_paused == paused {
            return Ok(false);
        }
        state.keep_alive_paused = paused;
        info!(paused, "operator: keep-alive");
        Ok(true)
    }
}
