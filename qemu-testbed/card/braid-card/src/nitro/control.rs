//! Device control and status (`DEV_CTL`/`DEV_STS`) as both drivers drive
//! them (`ena_com_dev_reset`, `efa_com_dev_reset`): the driver sets
//! DEV_RESET with a reason, waits for RESET_IN_PROGRESS, clears the bit
//! and waits for RESET_IN_PROGRESS to drop; AQ_RESTART restarts the admin
//! queue. Also the periodic timer behind keep-alive events.

use std::sync::{Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use tracing::{debug, warn};

use super::regs::bar0::{
    DEV_CTL_AQ_RESTART, DEV_CTL_DEV_RESET, DEV_CTL_RESET_REASON, DEV_STS_AQ_RESTART_FINISHED,
    DEV_STS_AQ_RESTART_IN_PROGRESS, DEV_STS_READY, DEV_STS_RESET_FINISHED,
    DEV_STS_RESET_IN_PROGRESS,
};

/// `DEV_CTL` as last written and `DEV_STS` as the device reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceControl {
    /// Last value written to `DEV_CTL`.
    pub dev_ctl: u32,
    /// The status register.
    pub dev_sts: u32,
}

impl Default for DeviceControl {
    /// Power-on: ready.
    fn default() -> Self {
        Self {
            dev_ctl: 0,
            dev_sts: DEV_STS_READY,
        }
    }
}

/// What a `DEV_CTL` write asks the device to do beyond the status bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlRequest {
    /// A reset starts, with this reason: drop every queue and setting.
    pub reset: Option<u32>,
    /// Restart the admin queue rings.
    pub aq_restart: bool,
}

impl DeviceControl {
    /// Applies a `DEV_CTL` write: a rising DEV_RESET starts a reset
    /// (RESET_IN_PROGRESS, READY clear); releasing it finishes the reset
    /// (READY and RESET_FINISHED); AQ_RESTART restarts the admin queue at
    /// once. A write with DEV_RESET held asks for nothing else.
    pub fn write(&mut self, value: u32) -> ControlRequest {
        let previous = self.dev_ctl;
        self.dev_ctl = value;
        let mut request = ControlRequest::default();
        if value & DEV_CTL_DEV_RESET != 0 {
            if previous & DEV_CTL_DEV_RESET == 0 {
                self.dev_sts = DEV_STS_RESET_IN_PROGRESS;
                request.reset = Some(DEV_CTL_RESET_REASON.get(value));
            }
            return request;
        }
        if self.dev_sts & DEV_STS_RESET_IN_PROGRESS != 0 {
            self.dev_sts = DEV_STS_READY | DEV_STS_RESET_FINISHED;
        }
        if value & DEV_CTL_AQ_RESTART != 0 {
            self.dev_sts &= !DEV_STS_AQ_RESTART_IN_PROGRESS;
            self.dev_sts |= DEV_STS_AQ_RESTART_FINISHED;
            request.aq_restart = true;
        }
        request
    }
}

/// Runs `tick` on the state behind `state` once every `period` for as
/// long as `running` holds; returns as soon as it does not (a notify on
/// `wake` makes a sleeping timer check at once). The lock is released
/// while waiting.
pub fn every<S>(
    state: &Mutex<S>,
    wake: &Condvar,
    period: Duration,
    running: impl Fn(&S) -> bool,
    mut tick: impl FnMut(&mut S),
) {
    let mut guard = state.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let (next, _) = wake
            .wait_timeout_while(guard, period, |s| running(s))
            .unwrap_or_else(PoisonError::into_inner);
        guard = next;
        if !running(&guard) {
            return;
        }
        tick(&mut guard);
    }
}

/// Starts the timer thread `name` running `body`, unless one runs
/// already (`*running`); sets `*running` once it started.
pub fn start_timer(name: &str, running: &mut bool, body: impl FnOnce() + Send + 'static) {
    if *running {
        return;
    }
    match thread::Builder::new().name(name.into()).spawn(body) {
        Ok(_) => {
            *running = true;
            debug!(name, "timer started");
        }
        Err(err) => warn!(name, error = %err, "cannot start a timer thread"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_handshake_as_the_drivers_poll_it() {
        let mut ctl = DeviceControl::default();
        assert_eq!(ctl.dev_sts, DEV_STS_READY);
        let req = ctl.write(DEV_CTL_DEV_RESET | DEV_CTL_RESET_REASON.put(3));
        assert_eq!(req.reset, Some(3));
        assert_eq!(ctl.dev_sts, DEV_STS_RESET_IN_PROGRESS, "READY drops");
        // Holding the bit does not restart the reset.
        assert_eq!(ctl.write(DEV_CTL_DEV_RESET).reset, None);
        assert_eq!(ctl.write(0), ControlRequest::default());
        assert_eq!(ctl.dev_sts, DEV_STS_READY | DEV_STS_RESET_FINISHED);
        let req = ctl.write(DEV_CTL_AQ_RESTART);
        assert!(req.aq_restart && req.reset.is_none());
        assert_ne!(ctl.dev_sts & DEV_STS_AQ_RESTART_FINISHED, 0);
    }
}
