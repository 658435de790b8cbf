//! The operator's handle (the control socket's verbs) as ena.ko sees its
//! effects: link-change events with their phase bits, a fatal error in
//! DEV_STS and the AENQ, keep-alives stopped until a reset or a resume.

use super::*;
use crate::ena::operator::{DeviceState, FatalOutcome, KeepAlive, LinkOutcome};

/// Programs the AENQ as ena.ko does and enables `groups`; hands every
/// slot to the card.
fn arm_aenq(rig: &mut Rig, groups: u32) {
    rig.ram_write(AENQ, &[0; 64 * AENQ_DEPTH as usize]);
    rig.wr(regs::AENQ_BASE_LO, AENQ as u32);
    rig.wr(regs::AENQ_BASE_HI, 0);
    rig.wr(regs::AENQ_CAPS, caps(AENQ_DEPTH));
    let mut cmd = set_feature(id::AENQ_CONFIG);
    cmd.set_u32(24, groups);
    assert_eq!(rig.status(cmd), OK);
    rig.wr(regs::AENQ_HEAD_DB, AENQ_DEPTH.into());
}

/// The event at free-running index `n`, checked to be posted (its phase).
fn posted(rig: &Rig, n: u16) -> Entry {
    let e = aenq_entry(rig, n);
    assert_eq!(
        e.u8(aenq::layout::FLAGS) & aenq::layout::FLAG_PHASE,
        admin::phase_of(n, AENQ_DEPTH),
        "event {n} not posted (phase)"
    );
    e
}

fn assert_link_event(rig: &Rig, n: u16, up: bool) {
    let e = posted(rig, n);
    assert_eq!(
        e.u16(aenq::layout::GROUP),
        aenq::group::LINK_CHANGE,
        "event {n}"
    );
    assert_eq!(
        e.u32(aenq::layout::LINK_CHANGE_FLAGS),
        u32::from(up),
        "event {n}"
    );
}

fn tail(rig: &Rig) -> u16 {
    rig.rd(regs::AENQ_TAIL) as u16
}

/// Frees every slot up to `tail + depth`, as ena.ko's AENQ handler does
/// after consuming the events.
fn consume_all(rig: &Rig) {
    rig.wr(
        regs::AENQ_HEAD_DB,
        u32::from(tail(rig)) + u32::from(AENQ_DEPTH),
    );
}

#[test]
fn link_flaps_post_events_with_phase_bits_over_wraps() {
    let mut rig = Rig::new(16);
    arm_aenq(&mut rig, aenq::SUPPORTED_GROUPS);
    assert_link_event(&rig, 0, true);
    let _ = rig.irq.read();
    // Two and a half rings of flaps: the phase flips on every wrap.
    for i in 0..(AENQ_DEPTH * 5 / 2) {
        let up = i % 2 == 1;
        assert_eq!(rig.ctl.set_link(up), Ok(LinkOutcome::Reported), "flap {i}");
        assert_link_event(&rig, 1 + i, up);
        assert_eq!(tail(&rig), 2 + i);
        assert!(rig.irq.read().unwrap() >= 1, "flap {i} signalled");
        assert_eq!(rig.ctl.status().unwrap().link_up, up);
        consume_all(&rig);
    }
    // Setting the state it already has posts nothing.
    let before = tail(&rig);
    let up = rig.ctl.status().unwrap().link_up;
    assert_eq!(rig.ctl.set_link(up), Ok(LinkOutcome::Unchanged));
    assert_eq!(tail(&rig), before);
}

#[test]
fn link_state_waits_for_the_aenq_and_survives_resets() {
    let mut rig = Rig::new(16);
    // Before the driver arms the AENQ: remembered, reported at arming.
    assert_eq!(rig.ctl.set_link(false), Ok(LinkOutcome::Pending));
    assert!(rig.ctl.status().unwrap().link_event_pending);
    arm_aenq(&mut rig, aenq::SUPPORTED_GROUPS);
    assert_link_event(&rig, 0, false);
    assert_eq!(tail(&rig), 1);
    assert!(!rig.ctl.status().unwrap().link_event_pending);

    // A device reset keeps the link down; the re-armed AENQ hears so.
    rig.wr(regs::DEV_CTL, regs::DEV_CTL_DEV_RESET);
    rig.wr(regs::DEV_CTL, 0);
    rig.init_admin();
    assert!(!rig.ctl.status().unwrap().link_up);
    arm_aenq(&mut rig, aenq::SUPPORTED_GROUPS);
    assert_link_event(&rig, 0, false);

    // So does a function reset (VFIO reset, QEMU reconnecting).
    rig.f.reset();
    let msix = rig.f.with_config(|c| c.find_capability(0x11)).unwrap() as u64;
    rig.f
        .region_write(7, 0x04, &0x0006u16.to_le_bytes())
        .unwrap();
    rig.f
        .region_write(7, msix + 2, &0x8000u16.to_le_bytes())
        .unwrap();
    rig.init_admin();
    arm_aenq(&mut rig, aenq::SUPPORTED_GROUPS);
    assert_link_event(&rig, 0, false);

    // With the link group disabled, the change waits for it.
    rig.wr(regs::DEV_CTL, regs::DEV_CTL_DEV_RESET);
    rig.wr(regs::DEV_CTL, 0);
    rig.init_admin();
    arm_aenq(&mut rig, 1 << aenq::group::KEEP_ALIVE);
    assert_eq!(tail(&rig), 0);
    assert_eq!(rig.ctl.set_link(true), Ok(LinkOutcome::Pending));
    assert_eq!(tail(&rig), 0);
    let mut cmd = set_feature(id::AENQ_CONFIG);
    cmd.set_u32(24, aenq::SUPPORTED_GROUPS);
    assert_eq!(rig.status(cmd), OK);
    assert_link_event(&rig, 0, true);
}

#[test]
fn fatal_error_sets_dev_sts_and_stops_keep_alives_until_reset() {
    let period = Duration::from_millis(20);
    let mut rig = Rig::with_period(16, period);
    arm_aenq(&mut rig, aenq::SUPPORTED_GROUPS);
    let wait_keep_alive = |rig: &Rig, n: u16| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while aenq_entry(rig, n).u8(aenq::layout::FLAGS) & 1 != admin::phase_of(n, AENQ_DEPTH) {
            assert!(Instant::now() < deadline, "no event {n}");
            std::thread::sleep(period / 4);
        }
        assert_eq!(
            posted(rig, n).u16(aenq::layout::GROUP),
            aenq::group::KEEP_ALIVE
        );
    };
    wait_keep_alive(&rig, 1);
    assert_eq!(rig.ctl.status().unwrap().keep_alive, KeepAlive::Running);
    consume_all(&rig);

    assert_eq!(rig.ctl.fatal_error(), Ok(FatalOutcome::Reported));
    assert_ne!(rig.rd(regs::DEV_STS) & regs::DEV_STS_FATAL_ERROR, 0);
    // The fatal event is the last one; nothing follows it.
    let t = tail(&rig);
    let fatal = posted(&rig, t - 1);
    assert_eq!(fatal.u16(aenq::layout::GROUP), aenq::group::FATAL_ERROR);
    assert_eq!(fatal.u16(aenq::layout::SYNDROME), 0);
    consume_all(&rig);
    std::thread::sleep(period * 8);
    assert_eq!(tail(&rig), t, "no keep-alive after the fatal error");
    let status = rig.ctl.status().unwrap();
    assert_eq!(
        (status.device, status.keep_alive),
        (DeviceState::Fatal, KeepAlive::Stopped)
    );
    assert_eq!(rig.ctl.fatal_error(), Ok(FatalOutcome::AlreadyFatal));
    // The admin queue still answers, so the driver can tear down.
    assert_eq!(rig.status(get_feature(id::MTU)), OK);

    // ena_com_dev_reset: the device recovers.
    rig.wr(regs::DEV_CTL, regs::DEV_CTL_DEV_RESET);
    assert_eq!(rig.rd(regs::DEV_STS), regs::DEV_STS_RESET_IN_PROGRESS);
    rig.wr(regs::DEV_CTL, 0);
    assert_eq!(
        rig.rd(regs::DEV_STS),
        regs::DEV_STS_READY | regs::DEV_STS_RESET_FINISHED
    );
    assert_eq!(rig.ctl.status().unwrap().device, DeviceState::Ready);
    rig.init_admin();
    arm_aenq(&mut rig, aenq::SUPPORTED_GROUPS);
    assert_link_event(&rig, 0, true);
    wait_keep_alive(&rig, 1);
    assert_eq!(rig.ctl.status().unwrap().keep_alive, KeepAlive::Running);
}

#[test]
fn fatal_error_without_an_armed_aenq_is_silent() {
    let rig = Rig::new(16);
    assert_eq!(rig.ctl.fatal_error(), Ok(FatalOutcome::Silent));
    assert_ne!(rig.rd(regs::DEV_STS) & regs::DEV_STS_FATAL_ERROR, 0);
    assert_eq!(tail(&rig), 0);
}

#[test]
fn keep_alive_pause_survives_resets_until_resumed() {
    let period = Duration::from_millis(20);
    let mut rig = Rig::with_period(16, period);
    arm_aenq(&mut rig, aenq::SUPPORTED_GROUPS);
    let wait_event = |rig: &Rig, n: u16| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while aenq_entry(rig, n).u8(aenq::layout::FLAGS) & 1 != admin::phase_of(n, AENQ_DEPTH) {
            assert!(Instant::now() < deadline, "no event {n}");
            std::thread::sleep(period / 4);
        }
        posted(rig, n)
    };
    wait_event(&rig, 1);

    assert_eq!(rig.ctl.set_keep_alive_paused(true), Ok(true));
    assert_eq!(rig.ctl.set_keep_alive_paused(true), Ok(false));
    consume_all(&rig);
    let t = tail(&rig);
    std::thread::sleep(period * 8);
    assert_eq!(tail(&rig), t, "no keep-alive while paused");
    let status = rig.ctl.status().unwrap();
    assert_eq!(
        (status.keep_alive, status.device),
        (KeepAlive::Paused, DeviceState::Ready)
    );
    assert_eq!(rig.rd(regs::DEV_STS) & regs::DEV_STS_FATAL_ERROR, 0);
    // Link events still flow.
    assert_eq!(rig.ctl.set_link(false), Ok(LinkOutcome::Reported));
    assert_link_event(&rig, t, false);
    assert_eq!(rig.ctl.set_link(true), Ok(LinkOutcome::Reported));

    // The driver's watchdog resets the device: still paused.
    rig.wr(regs::DEV_CTL, regs::DEV_CTL_DEV_RESET);
    rig.wr(regs::DEV_CTL, 0);
    rig.init_admin();
    arm_aenq(&mut rig, aenq::SUPPORTED_GROUPS);
    assert_link_event(&rig, 0, true);
    std::thread::sleep(period * 8);
    assert_eq!(tail(&rig), 1, "no keep-alive after the reset while paused");

    assert_eq!(rig.ctl.set_keep_alive_paused(false), Ok(true));
    let e = wait_event(&rig, 1);
    assert_eq!(e.u16(aenq::layout::GROUP), aenq::group::KEEP_ALIVE);
    assert_eq!(rig.ctl.status().unwrap().keep_alive, KeepAlive::Running);
    assert_eq!(rig.ctl.set_keep_alive_paused(false), Ok(false));
}
