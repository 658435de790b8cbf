//! The ENA control plane driven the way ena.ko drives it, through BAR0
//! accesses on a whole function, with guest RAM in a memfd.

use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_MSIX_IRQ_INDEX,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::admin::{Entry, Status, aq, opcode};
use super::features::{self, id};
use super::*;
use crate::function::{Function, layout};

const RAM_SIZE: u64 = 0x20_0000;
const AQ: u64 = 0x1000;
const ACQ: u64 = 0x2000;
const AENQ: u64 = 0x3000;
const MMIO_RESP: u64 = 0x4000;
const CTRL_BUF: u64 = 0x5000;
const RING: u64 = 0x1_0000;
const AENQ_DEPTH: u16 = 16;

/// A function with guest RAM, MSI-X vector 0 wired to an eventfd, and a
/// model of ena.ko's admin queue bookkeeping.
struct Rig {
    f: Function,
    /// The operator's handle (the control socket's).
    ctl: EnaControl,
    ram: File,
    irq: EventFd,
    depth: u16,
    sq_tail: u16,
    cq_head: u16,
    next_id: u16,
}

fn caps(depth: u16) -> u32 {
    regs::QUEUE_CAPS_DEPTH.put(depth.into()) | regs::QUEUE_CAPS_ENTRY_SIZE.put(64)
}

impl Rig {
    fn new(depth: u16) -> Self {
        Self::with_period(depth, Duration::from_secs(3600))
    }

    fn with_period(depth: u16, keep_alive: Duration) -> Self {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        Self::build(depth, keep_alive, mac, Arc::new(switch::Switch::new()))
    }

    fn build(depth: u16, keep_alive: Duration, mac: [u8; 6], switch: Arc<switch::Switch>) -> Self {
        let settings = EnaSettings { mac, keep_alive };
        let (config, ctl) = function_config_with_control(DEFAULT_ID, settings, switch);
        let f = Function::new(config).unwrap();
        let (ram, irq) = crate::testing::attach(&f, RAM_SIZE);
        let mut rig = Self {
            f,
            ctl,
            ram,
            irq,
            depth,
            sq_tail: 0,
            cq_head: 0,
            next_id: 0,
        };
        rig.init_admin();
        rig
    }

    fn init_admin(&mut self) {
        self.wr(regs::AQ_BASE_LO, AQ as u32);
        self.wr(regs::AQ_BASE_HI, 0);
        self.wr(regs::ACQ_BASE_LO, ACQ as u32);
        self.wr(regs::ACQ_BASE_HI, 0);
        self.wr(regs::AQ_CAPS, caps(self.depth));
        self.wr(regs::ACQ_CAPS, caps(self.depth));
        self.sq_tail = 0;
        self.cq_head = 0;
        self.next_id = 0;
    }

    fn wr(&self, off: u64, value: u32) {
        self.f.region_write(0, off, &value.to_le_bytes()).unwrap();
    }

    fn rd(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.f.region_read(0, off, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    fn ram_read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.ram.read_exact_at(&mut buf, gpa).unwrap();
        buf
    }

    fn ram_write(&self, gpa: u64, bytes: &[u8]) {
        self.ram.write_all_at(bytes, gpa).unwrap();
    }

    fn entry_at(&self, gpa: u64) -> Entry {
        let mut e = Entry::default();
        e.0.copy_from_slice(&self.ram_read(gpa, 64));
        e
    }

    /// Places `cmd` at the tail as ena.ko does (command id, phase), without
    /// ringing the doorbell.
    fn queue(&mut self, mut cmd: Entry) -> u16 {
        let id = self.next_id;
        self.next_id = (self.next_id + 1) & (self.depth - 1);
        let phase = admin::phase_of(self.sq_tail, self.depth);
        cmd.set_u16(aq::COMMAND_ID, cmd.u16(aq::COMMAND_ID) | id);
        cmd.set_u8(aq::FLAGS, cmd.u8(aq::FLAGS) | phase);
        let slot = AQ + u64::from(self.sq_tail & (self.depth - 1)) * 64;
        self.ram_write(slot, &cmd.0);
        self.sq_tail = self.sq_tail.wrapping_add(1);
        id
    }

    fn doorbell(&self) {
        self.wr(regs::AQ_DB, self.sq_tail.into());
    }

    /// Takes the next completion, checking its phase.
    fn complete(&mut self) -> Entry {
        let slot = ACQ + u64::from(self.cq_head & (self.depth - 1)) * 64;
        let e = self.entry_at(slot);
        assert_eq!(
            e.u8(acq::FLAGS) & acq::FLAG_PHASE,
            admin::phase_of(self.cq_head, self.depth),
            "completion {} not posted",
            self.cq_head
        );
        self.cq_head = self.cq_head.wrapping_add(1);
        e
    }

    /// Submits one command and returns its completion.
    fn exec(&mut self, cmd: Entry) -> Entry {
        let id = self.queue(cmd);
        self.doorbell();
        let e = self.complete();
        assert_eq!(e.u16(acq::COMMAND) & 0xfff, id);
        e
    }

    fn status(&mut self, cmd: Entry) -> u8 {
        self.exec(cmd).u8(acq::STATUS)
    }
}

fn command(op: u8) -> Entry {
    let mut e = Entry::default();
    e.set_u8(aq::OPCODE, op);
    e
}

fn get_feature(feature: u8) -> Entry {
    let mut e = command(opcode::GET_FEATURE);
    e.set_u8(17, feature);
    e
}

fn set_feature(feature: u8) -> Entry {
    let mut e = command(opcode::SET_FEATURE);
    e.set_u8(17, feature);
    e
}

fn with_buffer(mut e: Entry, addr: u64, len: u32) -> Entry {
    e.set_u8(aq::FLAGS, aq::FLAG_CTRL_DATA_INDIRECT);
    e.set_u32(aq::CTRL_BUF_LENGTH, len);
    e.set_u32(aq::CTRL_BUF_ADDRESS, addr as u32);
    e.set_u16(aq::CTRL_BUF_ADDRESS + 4, (addr >> 32) as u16);
    e
}

const OK: u8 = Status::Success as u8;

#[test]
fn readless_register_read() {
    let rig = Rig::new(32);
    rig.wr(regs::MMIO_RESP_LO, MMIO_RESP as u32);
    rig.wr(regs::MMIO_RESP_HI, 0);
    for (req, off, expected) in [
        (1u32, crate::nitro::regs::bar0::CAPS, REGISTERS.caps),
        (2, regs::DEV_STS, regs::DEV_STS_READY),
        (3, regs::AQ_CAPS, caps(32)),
    ] {
        rig.wr(
            regs::MMIO_REG_READ,
            regs::MMIO_REG_READ_REG_OFF.put(off as u32) | regs::MMIO_REG_READ_REQ_ID.put(req),
        );
        let resp = rig.ram_read(MMIO_RESP, 8);
        assert_eq!(u16::from_le_bytes([resp[0], resp[1]]), req as u16);
        assert_eq!(u16::from_le_bytes([resp[2], resp[3]]), off as u16);
        assert_eq!(u32::from_le_bytes(resp[4..8].try_into().unwrap()), expected);
    }
    // A response address outside guest memory: no response, no panic.
    rig.wr(regs::MMIO_RESP_LO, 0xfff0_0000);
    rig.wr(regs::MMIO_REG_READ, 9);
    assert_eq!(rig.rd(regs::MMIO_REG_READ), 9);
}

#[test]
fn reset_handshake_as_ena_com_dev_reset_polls_it() {
    let mut rig = Rig::new(32);
    assert_eq!(rig.status(get_feature(id::DEVICE_ATTRIBUTES)), OK);
    assert_eq!(
        rig.rd(regs::DEV_STS) & regs::DEV_STS_READY,
        regs::DEV_STS_READY
    );

    rig.wr(
        regs::DEV_CTL,
        regs::DEV_CTL_DEV_RESET | regs::DEV_CTL_RESET_REASON.put(7),
    );
    let sts = rig.rd(regs::DEV_STS);
    assert_ne!(sts & regs::DEV_STS_RESET_IN_PROGRESS, 0);
    assert_eq!(sts & regs::DEV_STS_READY, 0);
    assert_eq!(rig.rd(regs::AQ_CAPS), 0, "admin queue dropped");
    assert_eq!(rig.rd(regs::ACQ_TAIL), 0);

    rig.wr(regs::DEV_CTL, 0);
    let sts = rig.rd(regs::DEV_STS);
    assert_eq!(sts & regs::DEV_STS_RESET_IN_PROGRESS, 0);
    assert_ne!(sts & regs::DEV_STS_RESET_FINISHED, 0);
    assert_ne!(sts & regs::DEV_STS_READY, 0);

    // The driver sets the admin queue up again and it works from index 0.
    rig.init_admin();
    assert_eq!(rig.status(get_feature(id::DEVICE_ATTRIBUTES)), OK);

    // Quiescence and resume.
    rig.wr(regs::DEV_CTL, regs::DEV_CTL_QUIESCENT);
    assert_ne!(
        rig.rd(regs::DEV_STS) & regs::DEV_STS_QUIESCENT_STATE_ACHIEVED,
        0
    );
    rig.wr(regs::DEV_CTL, regs::DEV_CTL_IO_RESUME);
    assert_eq!(
        rig.rd(regs::DEV_STS) & regs::DEV_STS_QUIESCENT_STATE_ACHIEVED,
        0
    );

    // A function reset also returns everything to power-on state.
    rig.f.reset();
    assert_eq!(rig.rd(regs::DEV_STS), regs::DEV_STS_READY);
    assert_eq!(rig.rd(regs::AQ_BASE_LO), 0);
}

#[test]
fn probe_features_are_consistent() {
    let mut rig = Rig::new(32);
    let attrs = rig.exec(get_feature(id::DEVICE_ATTRIBUTES));
    assert_eq!(attrs.u8(acq::STATUS), OK);
    let supported = attrs.u32(acq::BODY + 8);
    for f in [
        id::MAX_QUEUES_EXT,
        id::LLQ,
        id::AENQ_CONFIG,
        id::MTU,
        id::HOST_ATTR_CONFIG,
        id::RSS_HASH_FUNCTION,
        id::RSS_INDIRECTION_TABLE_CONFIG,
        id::INTERRUPT_MODERATION,
    ] {
        assert_ne!(supported & (1 << f), 0, "feature {f}");
    }
    assert_eq!(supported & (1 << 29), 0, "no PHC");
    assert_eq!(attrs.u32(acq::BODY + 16), 48);
    assert_eq!(
        &attrs.0[acq::BODY + 24..acq::BODY + 30],
        &[0x02, 0x11, 0x22, 0x33, 0x44, 0x55]
    );
    assert_eq!(attrs.u32(acq::BODY + 32), 9001);

    let mut q = get_feature(id::MAX_QUEUES_EXT);
    q.set_u8(18, 1);
    let q = rig.exec(q);
    assert_eq!(q.u8(acq::STATUS), OK);
    assert_eq!(q.u8(acq::BODY), 1, "version");
    assert_eq!(q.u32(acq::BODY + 4), 8, "max tx sq num");
    assert_eq!(q.u32(acq::BODY + 20), 1024, "max tx sq depth");

    let llq = rig.exec(get_feature(id::LLQ));
    assert_eq!(llq.u32(acq::BODY), 8);
    let depth = llq.u32(acq::BODY + 4);
    assert_eq!(
        u64::from(depth) * 128 * 8,
        layout::BAR2_SIZE,
        "LLQs fill BAR2"
    );

    for f in [
        id::HW_HINTS,
        id::STATELESS_OFFLOAD_CONFIG,
        id::LINK_CONFIG,
        id::INTERRUPT_MODERATION,
        id::RSS_INDIRECTION_TABLE_CONFIG,
        id::MTU,
    ] {
        assert_eq!(rig.status(get_feature(f)), OK, "feature {f}");
    }
    let aenq = rig.exec(get_feature(id::AENQ_CONFIG));
    assert_eq!(aenq.u32(acq::BODY), aenq::SUPPORTED_GROUPS);

    // Set what ena.ko sets at probe.
    let mut llq_set = set_feature(id::LLQ);
    for (off, v) in [(30, 1u16), (34, 1), (38, 2), (42, 2), (48, 3)] {
        llq_set.set_u16(off, v);
    }
    assert_eq!(rig.status(llq_set), OK);
    let mut llq_bad = set_feature(id::LLQ);
    for (off, v) in [(30, 2u16), (34, 1), (38, 2), (42, 2)] {
        llq_bad.set_u16(off, v);
    }
    assert_eq!(rig.status(llq_bad), Status::IllegalParameter as u8);

    let mut groups = set_feature(id::AENQ_CONFIG);
    groups.set_u32(24, aenq::SUPPORTED_GROUPS);
    assert_eq!(rig.status(groups), OK);
    let mut groups = set_feature(id::AENQ_CONFIG);
    groups.set_u32(24, 1 << aenq::group::WARNING);
    assert_eq!(rig.status(groups), Status::IllegalParameter as u8);

    for (mtu, status) in [(1500, OK), (9001, OK), (9002, 5), (127, 5)] {
        let mut m = set_feature(id::MTU);
        m.set_u32(20, mtu);
        assert_eq!(rig.status(m), status, "MTU {mtu}");
    }
    assert_eq!(rig.exec(get_feature(id::MTU)).u32(acq::BODY), 9001);

    // Host attributes: a host info structure in guest memory.
    let mut info = vec![0u8; 196];
    info[0] = 1;
    info[136..141].copy_from_slice(b"7.3.4");
    info[188] = 2;
    rig.ram_write(CTRL_BUF, &info);
    let mut host = set_feature(id::HOST_ATTR_CONFIG);
    host.set_u32(20, CTRL_BUF as u32);
    assert_eq!(rig.status(host), OK);
    let mut host = set_feature(id::HOST_ATTR_CONFIG);
    host.set_u32(20, 0xffff_f000);
    host.set_u16(24, 0x7fff);
    assert_eq!(rig.status(host), Status::MalformedRequest as u8);

    // RSS as ena_com_rss_init and friends do it.
    let key = rig.exec(with_buffer(
        get_feature(id::RSS_HASH_FUNCTION),
        CTRL_BUF,
        48,
    ));
    assert_eq!(key.u8(acq::STATUS), OK);
    assert_eq!(key.u32(acq::BODY), features::rss::SUPPORTED_FUNCS);
    let mut keybuf = vec![0u8; 48];
    keybuf[0] = 10;
    keybuf[8] = 0xab;
    rig.ram_write(CTRL_BUF, &keybuf);
    let mut set_key = with_buffer(set_feature(id::RSS_HASH_FUNCTION), CTRL_BUF, 48);
    set_key.set_u32(24, 1 << 1);
    assert_eq!(rig.status(set_key), OK);
    let mut bad_func = with_buffer(set_feature(id::RSS_HASH_FUNCTION), CTRL_BUF, 48);
    bad_func.set_u32(24, 1 << 3);
    assert_eq!(rig.status(bad_func), Status::IllegalParameter as u8);
    let mut no_buf = set_feature(id::RSS_HASH_FUNCTION);
    no_buf.set_u32(24, 1 << 1);
    assert_eq!(rig.status(no_buf), Status::MalformedRequest as u8);

    let input = rig.exec(with_buffer(get_feature(id::RSS_HASH_INPUT), CTRL_BUF, 256));
    assert_eq!(input.u8(acq::STATUS), OK);
    let ctrl = rig.ram_read(CTRL_BUF, 256);
    assert_eq!(
        u16::from_le_bytes([ctrl[0], ctrl[1]]),
        features::rss::L3 | features::rss::L4
    );
    let mut set_input = with_buffer(set_feature(id::RSS_HASH_INPUT), CTRL_BUF, 256);
    set_input.set_u16(22, 0b110);
    assert_eq!(rig.status(set_input), OK);
    let mut bad = ctrl.clone();
    bad[64 + 4 * 7] = 0xff;
    rig.ram_write(CTRL_BUF, &bad);
    let set_input = with_buffer(set_feature(id::RSS_HASH_INPUT), CTRL_BUF, 256);
    assert_eq!(rig.status(set_input), Status::IllegalParameter as u8);

    // Unknown and get-only/set-only features.
    assert_eq!(rig.status(get_feature(29)), Status::UnsupportedOpcode as u8);
    assert_eq!(rig.status(get_feature(0)), Status::UnsupportedOpcode as u8);
    assert_eq!(
        rig.status(get_feature(200)),
        Status::UnsupportedOpcode as u8
    );
    assert_eq!(
        rig.status(get_feature(id::HOST_ATTR_CONFIG)),
        Status::UnsupportedOpcode as u8
    );
    assert_eq!(
        rig.status(set_feature(id::DEVICE_ATTRIBUTES)),
        Status::UnsupportedOpcode as u8
    );
    let mut v = get_feature(id::DEVICE_ATTRIBUTES);
    v.set_u8(18, 3);
    assert_eq!(rig.status(v), Status::IllegalParameter as u8);
}

fn create_cq(depth: u16, words: u8, vector: u32, base: u64) -> Entry {
    let mut e = command(opcode::CREATE_CQ);
    e.set_u8(4, 1 << 5);
    e.set_u8(5, words);
    e.set_u16(6, depth);
    e.set_u32(8, vector);
    e.set_u32(12, base as u32);
    e.set_u16(16, (base >> 32) as u16);
    e
}

fn create_sq(direction: u8, placement: u8, cq: u16, depth: u16, base: u64) -> Entry {
    let mut e = command(opcode::CREATE_SQ);
    e.set_u8(4, direction << 5);
    e.set_u8(6, placement);
    e.set_u8(7, 1);
    e.set_u16(8, cq);
    e.set_u16(10, depth);
    e.set_u32(12, base as u32);
    e
}

fn destroy_sq(direction: u8, idx: u16) -> Entry {
    let mut e = command(opcode::DESTROY_SQ);
    e.set_u16(4, idx);
    e.set_u8(6, direction << 5);
    e
}

fn destroy_cq(idx: u16) -> Entry {
    let mut e = command(opcode::DESTROY_CQ);
    e.set_u16(4, idx);
    e
}

#[test]
fn io_queues_and_stats() {
    let mut rig = Rig::new(32);
    let cq = rig.exec(create_cq(1024, 4, 1, RING));
    assert_eq!(cq.u8(acq::STATUS), OK);
    let cq_idx = cq.u16(acq::BODY);
    assert_eq!(cq.u16(acq::BODY + 2), 1024);
    let unmask = cq.u32(acq::BODY + 12);
    assert!((layout::DOORBELL_OFFSET..layout::BAR0_SIZE).contains(&u64::from(unmask)));

    // RX SQ in host memory on that CQ.
    let sq = rig.exec(create_sq(2, 1, cq_idx, 1024, RING + 0x1_0000));
    assert_eq!(sq.u8(acq::STATUS), OK);
    let rx_idx = sq.u16(acq::BODY);
    let db = sq.u32(acq::BODY + 4);
    assert!((layout::DOORBELL_OFFSET..layout::BAR0_SIZE).contains(&u64::from(db)));

    // TX LLQ on a second CQ: its descriptors are in BAR2.
    let cq2 = rig
        .exec(create_cq(512, 2, 2, RING + 0x2_0000))
        .u16(acq::BODY);
    let tx = rig.exec(create_sq(1, 3, cq2, 512, 0));
    assert_eq!(tx.u8(acq::STATUS), OK);
    assert!(u64::from(tx.u32(acq::BODY + 8)) < layout::BAR2_SIZE);
    assert_ne!(tx.u32(acq::BODY + 4), db, "distinct doorbells");

    // Invalid creations.
    let bad = [
        (create_cq(1000, 4, 1, RING), Status::IllegalParameter),
        (create_cq(1024, 3, 1, RING), Status::IllegalParameter),
        (create_cq(1024, 4, 0, RING), Status::IllegalParameter),
        (create_cq(1024, 4, 9, RING), Status::IllegalParameter),
        (create_cq(1024, 4, 1, 0), Status::MalformedRequest),
        (
            create_cq(1024, 4, 1, RAM_SIZE - 0x100),
            Status::MalformedRequest,
        ),
        (
            create_sq(3, 1, cq_idx, 1024, RING),
            Status::IllegalParameter,
        ),
        (create_sq(2, 1, 15, 1024, RING), Status::IllegalParameter),
        (create_sq(2, 1, cq_idx, 1024, RING), Status::ResourceBusy),
        (create_sq(2, 3, cq_idx, 1024, 0), Status::ResourceBusy),
        (destroy_sq(2, 7), Status::IllegalParameter),
        (destroy_cq(cq_idx), Status::ResourceBusy),
        (destroy_cq(12), Status::IllegalParameter),
    ];
    for (cmd, status) in bad {
        assert_eq!(rig.status(cmd), status as u8, "{cmd:?}");
    }

    // RSS table naming the RX queue, then one naming a missing queue.
    let mut table = vec![0u8; 128 * 4];
    for entry in table.chunks_mut(4) {
        entry[..2].copy_from_slice(&rx_idx.to_le_bytes());
    }
    rig.ram_write(CTRL_BUF, &table);
    let mut set = with_buffer(set_feature(id::RSS_INDIRECTION_TABLE_CONFIG), CTRL_BUF, 512);
    set.set_u16(24, 7);
    set.set_u32(28, u32::MAX);
    assert_eq!(rig.status(set), OK);
    table[4] = 5;
    rig.ram_write(CTRL_BUF, &table);
    assert_eq!(rig.status(set), Status::IllegalParameter as u8);
    let mut wrong_len = set;
    wrong_len.set_u32(aq::CTRL_BUF_LENGTH, 256);
    assert_eq!(rig.status(wrong_len), Status::MalformedRequest as u8);

    // Teardown in ena.ko's order: SQ, then CQ.
    assert_eq!(rig.status(destroy_sq(2, rx_idx)), OK);
    assert_eq!(rig.status(destroy_cq(cq_idx)), OK);
    assert_eq!(rig.status(destroy_sq(1, tx.u16(acq::BODY))), OK);
    assert_eq!(rig.status(destroy_cq(cq2)), OK);

    // Queue exhaustion.
    for n in 0..queues::MAX_CQS {
        assert_eq!(rig.status(create_cq(256, 2, 1, RING)), OK, "CQ {n}");
    }
    assert_eq!(
        rig.status(create_cq(256, 2, 1, RING)),
        Status::ResourceAllocationFailure as u8
    );

    // Basic statistics: device scope only; the counters are real (zero).
    let mut stats = command(opcode::GET_STATS);
    stats.set_u8(17, 1);
    let s = rig.exec(stats);
    assert_eq!(s.u8(acq::STATUS), OK);
    assert!(s.0[acq::BODY..acq::BODY + 48].iter().all(|&b| b == 0));
    let mut queue_scope = command(opcode::GET_STATS);
    queue_scope.set_u8(17, 0);
    assert_eq!(rig.status(queue_scope), Status::UnsupportedOpcode as u8);
    let mut eni = command(opcode::GET_STATS);
    eni.set_u8(16, 2);
    assert_eq!(rig.status(eni), Status::UnsupportedOpcode as u8);
}

#[test]
fn malformed_submissions_get_error_statuses() {
    let mut rig = Rig::new(8);
    for op in [0u8, 5, 6, 7, 10, 12, 255] {
        assert_eq!(
            rig.status(command(op)),
            Status::BadOpcode as u8,
            "opcode {op}"
        );
    }

    // Wrong phase: the entry is completed as malformed, with its id.
    let mut stale = get_feature(id::DEVICE_ATTRIBUTES);
    stale.set_u8(aq::FLAGS, 0);
    let slot = AQ + u64::from(rig.sq_tail & 7) * 64;
    stale.set_u16(aq::COMMAND_ID, 3);
    // Write it directly with phase 0 on the first pass.
    rig.ram_write(slot, &stale.0);
    rig.sq_tail += 1;
    rig.doorbell();
    let e = rig.complete();
    assert_eq!(e.u8(acq::STATUS), Status::MalformedRequest as u8);
    assert_eq!(e.u16(acq::COMMAND), 3);

    // Command id beyond the queue depth.
    let mut big = get_feature(id::DEVICE_ATTRIBUTES);
    big.set_u16(aq::COMMAND_ID, 0x800);
    let id = rig.queue(big);
    rig.doorbell();
    let e = rig.complete();
    assert_eq!(e.u16(acq::COMMAND), 0x800 | id);
    assert_eq!(e.u8(acq::STATUS), Status::MalformedRequest as u8);

    // Control buffer outside guest memory.
    let cmd = with_buffer(get_feature(id::RSS_HASH_FUNCTION), RAM_SIZE + 0x1000, 48);
    assert_eq!(rig.status(cmd), Status::MalformedRequest as u8);
    let cmd = with_buffer(get_feature(id::RSS_HASH_FUNCTION), CTRL_BUF, 8);
    assert_eq!(rig.status(cmd), Status::MalformedRequest as u8);

    // A doorbell more than a ring ahead is refused without completions.
    let tail = rig.cq_head;
    rig.wr(regs::AQ_DB, u32::from(rig.sq_tail.wrapping_add(9)));
    assert_eq!(rig.rd(regs::ACQ_TAIL), u32::from(tail));
    // The queue keeps working afterwards.
    assert_eq!(rig.status(get_feature(id::MTU)), OK);

    // A doorbell on an unconfigured queue does nothing.
    rig.wr(regs::AQ_CAPS, caps(24));
    rig.wr(regs::AQ_DB, 1);
    assert_eq!(rig.rd(regs::ACQ_TAIL), u32::from(rig.cq_head));

    // Sub-dword writes are ignored.
    rig.f.region_write(0, regs::INTR_MASK, &[1]).unwrap();
    assert_eq!(rig.rd(regs::INTR_MASK), 0);
}

#[test]
fn phase_wraps_over_several_ring_lengths() {
    let mut rig = Rig::new(4);
    // One at a time, then in bursts of a full ring, then a partial burst.
    for _ in 0..9 {
        assert_eq!(rig.status(get_feature(id::DEVICE_ATTRIBUTES)), OK);
    }
    for _ in 0..3 {
        let ids: Vec<u16> = (0..4).map(|_| rig.queue(get_feature(id::MTU))).collect();
        rig.doorbell();
        for id in ids {
            let e = rig.complete();
            assert_eq!(e.u16(acq::COMMAND), id);
            assert_eq!(e.u8(acq::STATUS), OK);
            assert_eq!(e.u16(acq::SQ_HEAD_INDX), (id + 1) & 3);
        }
    }
    assert_eq!(rig.rd(regs::ACQ_TAIL), 21);
    assert!(rig.irq.read().unwrap() >= 1, "admin vector signalled");

    // Polling mode: no interrupt.
    rig.wr(regs::INTR_MASK, regs::INTR_MASK_ADMIN);
    assert_eq!(rig.status(get_feature(id::MTU)), OK);
    assert!(rig.irq.read().is_err());
}

fn aenq_entry(rig: &Rig, index: u16) -> Entry {
    rig.entry_at(AENQ + u64::from(index % AENQ_DEPTH) * 64)
}

fn count_events(rig: &Rig, from: u16) -> u16 {
    let mut n = from;
    while aenq_entry(rig, n).u8(aenq::layout::FLAGS) & 1 == admin::phase_of(n, AENQ_DEPTH) {
        n += 1;
        if n - from == AENQ_DEPTH {
            break;
        }
    }
    n - from
}

#[test]
fn aenq_link_up_and_keep_alive_cadence() {
    let period = Duration::from_millis(40);
    let mut rig = Rig::with_period(32, period);
    rig.wr(regs::AENQ_BASE_LO, AENQ as u32);
    rig.wr(regs::AENQ_BASE_HI, 0);
    rig.wr(regs::AENQ_CAPS, caps(AENQ_DEPTH));
    let mut groups = set_feature(id::AENQ_CONFIG);
    groups.set_u32(24, aenq::SUPPORTED_GROUPS);
    assert_eq!(rig.status(groups), OK);
    assert_eq!(
        rig.rd(regs::AENQ_TAIL),
        0,
        "no slots until the head doorbell"
    );
    let _ = rig.irq.read();

    let start = Instant::now();
    rig.wr(regs::AENQ_HEAD_DB, AENQ_DEPTH.into());
    let link = aenq_entry(&rig, 0);
    assert_eq!(link.u16(aenq::layout::GROUP), aenq::group::LINK_CHANGE);
    assert_eq!(link.u8(aenq::layout::FLAGS) & 1, 1);
    assert_eq!(link.u32(aenq::layout::LINK_CHANGE_FLAGS), 1, "link up");
    assert_eq!(rig.irq.read().unwrap(), 1);

    std::thread::sleep(period * 5 + period / 2);
    let elapsed = start.elapsed();
    let events = count_events(&rig, 1);
    let expected = (elapsed.as_millis() / period.as_millis()) as u16;
    assert!(
        events >= 3 && events <= expected,
        "{events} keep-alives in {elapsed:?}"
    );
    for i in 1..=events {
        let e = aenq_entry(&rig, i);
        assert_eq!(e.u16(aenq::layout::GROUP), aenq::group::KEEP_ALIVE);
        assert_eq!(e.u32(aenq::layout::KEEP_ALIVE_RX_DROPS), 0);
        assert_eq!(e.u32(aenq::layout::KEEP_ALIVE_TX_DROPS), 0);
    }
    assert_eq!(
        rig.rd(regs::AENQ_TAIL),
        u32::from(1 + events).max(rig.rd(regs::AENQ_TAIL))
    );
    assert!(rig.irq.read().unwrap() >= 1);

    // The queue fills up when the driver consumes nothing: the card never
    // overwrites.
    std::thread::sleep(period * u32::from(AENQ_DEPTH + 2));
    assert_eq!(rig.rd(regs::AENQ_TAIL), u32::from(AENQ_DEPTH));
    // The driver consumes everything; events flow again and wrap with
    // phase 0.
    rig.wr(regs::AENQ_HEAD_DB, u32::from(2 * AENQ_DEPTH));
    std::thread::sleep(period * 3);
    let wrapped = aenq_entry(&rig, AENQ_DEPTH);
    assert_eq!(wrapped.u8(aenq::layout::FLAGS) & 1, 0);
    assert_eq!(wrapped.u16(aenq::layout::GROUP), aenq::group::KEEP_ALIVE);

    // Reset stops the timer.
    rig.wr(regs::DEV_CTL, regs::DEV_CTL_DEV_RESET);
    rig.wr(regs::DEV_CTL, 0);
    let before = rig.ram_read(AENQ, 64 * usize::from(AENQ_DEPTH));
    std::thread::sleep(period * 3);
    assert_eq!(rig.ram_read(AENQ, 64 * usize::from(AENQ_DEPTH)), before);
    assert_eq!(rig.rd(regs::AENQ_TAIL), 0);
}

pub(super) use crate::testing::fuzz_rounds;

/// xorshift64*: a small deterministic generator for the fuzz tests.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_submissions_always_complete_with_a_status() {
    let mut rig = Rig::new(16);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let opcodes = [
        opcode::CREATE_SQ,
        opcode::DESTROY_SQ,
        opcode::CREATE_CQ,
        opcode::DESTROY_CQ,
        opcode::GET_FEATURE,
        opcode::SET_FEATURE,
        opcode::GET_STATS,
    ];
    let mut completed = 0;
    for round in 0..fuzz_rounds(300) {
        let burst = 1 + (rng.next() % 16) as usize;
        let mut ids = Vec::new();
        for _ in 0..burst {
            let mut e = Entry::default();
            for chunk in e.0.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            let r = rng.next();
            if r % 8 != 0 {
                e.set_u8(aq::OPCODE, opcodes[(r >> 8) as usize % opcodes.len()]);
            }
            if r % 4 != 0 {
                // Mostly small feature ids and guest addresses inside RAM.
                e.set_u8(17, (r >> 16) as u8 % 32);
                e.set_u16(aq::CTRL_BUF_ADDRESS + 4, 0);
                e.set_u32(aq::CTRL_BUF_ADDRESS, (r >> 24) as u32 % RAM_SIZE as u32);
                e.set_u16(16, 0);
            }
            // The rig sets command id and phase; let some be wrong.
            e.set_u16(aq::COMMAND_ID, if r % 16 == 1 { 0x40 } else { 0 });
            let flags = e.u8(aq::FLAGS) & !aq::FLAG_PHASE;
            e.set_u8(aq::FLAGS, flags);
            let id = rig.queue(e);
            if r % 16 == 2 {
                // Flip the phase of the entry just written.
                let slot = AQ + u64::from(rig.sq_tail.wrapping_sub(1) & 15) * 64 + 3;
                let b = rig.ram_read(slot, 1)[0] ^ 1;
                rig.ram_write(slot, &[b]);
            }
            ids.push(id);
        }
        rig.doorbell();
        for id in ids {
            let e = rig.complete();
            assert_eq!(e.u16(acq::COMMAND) & 0xf, id, "round {round}");
            assert!(e.u8(acq::STATUS) <= Status::ResourceBusy as u8);
            completed += 1;
        }
    }
    assert!(completed >= 300);
    assert_eq!(rig.rd(regs::DEV_STS) & regs::DEV_STS_FATAL_ERROR, 0);
}

mod datapath;

/// The device's RSS key as GET_FEATURE(RSS_HASH_FUNCTION) returns it.
fn device_rss_key(rig: &mut Rig) -> Vec<u8> {
    let get = with_buffer(get_feature(id::RSS_HASH_FUNCTION), CTRL_BUF, 48);
    assert_eq!(rig.status(get), OK);
    rig.ram_read(CTRL_BUF + 8, 40)
}

#[test]
fn each_device_has_its_own_nonzero_rss_key_across_resets() {
    let mut a = Rig::new(8);
    let mut b = Rig::new(8);
    let key = device_rss_key(&mut a);
    assert_ne!(
        key,
        vec![0; 40],
        "ena.ko keeps the device's key: zero would hash every flow alike"
    );
    assert_ne!(device_rss_key(&mut b), key);
    a.wr(regs::DEV_CTL, regs::DEV_CTL_DEV_RESET);
    a.wr(regs::DEV_CTL, 0);
    a.init_admin();
    assert_eq!(device_rss_key(&mut a), key, "the default survives a reset");
}
mod operator;
