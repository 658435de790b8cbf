//! The EFA control plane driven the way efa.ko drives it (`efa_com.c`,
//! `efa_com_cmd.c`, `efa_verbs.c`), through BAR0 accesses on a whole
//! function with guest RAM in a memfd.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vm_memory::Bytes;
use vmm_sys_util::eventfd::EventFd;

use super::admin::layout::{self as l, create_qp as cq_l, reg_mr as mr_l};
use super::admin::{feature, opcode, qp_state};
use super::*;
use crate::function::Function;
use crate::nitro::admin::{self as admin_queue, Entry, aq, aq_v2};

const RAM_SIZE: u64 = 0x40_0000;
const AQ: u64 = 0x1000;
const ACQ: u64 = 0x2000;
const AENQ: u64 = 0x3000;
const MMIO_RESP: u64 = 0x4000;
const BUF: u64 = 0x5000;
const RING: u64 = 0x1_0000;
const DEPTH: u16 = 32;
const AENQ_DEPTH: u16 = 16;

/// A function with guest RAM, MSI-X vector 0 on an eventfd, and efa.ko's
/// admin-queue bookkeeping (producer counter, completion consumer, phase,
/// command ids with entropy bits above the slot, and the submission size
/// of the admin API: 128-byte entries with a CRC16, as efa.ko uses them
/// with a card of API 0.3, or 64-byte ones).
struct Rig {
    f: Function,
    ram: File,
    irq: EventFd,
    pc: u16,
    cc: u16,
    seq: u16,
    aq_entry: usize,
}

/// `efa_com_calc_crc16_checksum` of `bytes` with the checksum at `at`
/// zeroed, written out bit by bit (poly 0x8005 reflected, init and final
/// XOR 0xffff) so that the card's table-driven one is checked against it.
fn crc16_except(bytes: &[u8], at: usize) -> u16 {
    let mut crc = 0xffffu16;
    for (i, &b) in bytes.iter().enumerate() {
        crc ^= u16::from(if (at..at + 2).contains(&i) { 0 } else { b });
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                crc >> 1 ^ 0xa001
            } else {
                crc >> 1
            };
        }
    }
    crc ^ 0xffff
}

fn caps(depth: u16, entry: u32, vector: u32) -> u32 {
    u32::from(depth) | (entry << 16) | (vector << 24)
}

impl Rig {
    fn new() -> Self {
        Self::with_period(Duration::from_secs(3600))
    }

    fn with_period(keep_alive: Duration) -> Self {
        let settings = EfaSettings {
            keep_alive,
            ..EfaSettings::default()
        };
        Self::on(function_config_with(DEFAULT_ID, settings))
    }

    /// A function with GID `gid` on `fabric`.
    fn on_fabric(fabric: &Arc<fabric::Fabric>, gid: [u8; 16]) -> Self {
        let settings = EfaSettings {
            gid,
            keep_alive: Duration::from_secs(3600),
        };
        Self::on(function_config_on(DEFAULT_ID, settings, Arc::clone(fabric)))
    }

    fn on(config: FunctionConfig) -> Self {
        let f = Function::new(config).unwrap();
        let (ram, irq) = crate::testing::attach(&f, RAM_SIZE);
        let rig = Self {
            f,
            ram,
            irq,
            pc: 0,
            cc: 0,
            seq: 0,
            aq_entry: admin_queue::V2_ENTRY_SIZE,
        };
        rig.wr(regs::MMIO_RESP_HI, 0);
        rig.wr(regs::MMIO_RESP_LO, MMIO_RESP as u32);
        rig.init_admin();
        rig
    }

    /// `efa_com_admin_init`: polling mode, the three rings, AENQ consumer 0.
    fn init_admin(&self) {
        self.wr(regs::INTR_MASK, 1);
        self.wr(regs::AQ_BASE_LO, AQ as u32);
        self.wr(regs::AQ_BASE_HI, 0);
        self.wr(regs::AQ_CAPS, caps(DEPTH, self.aq_entry as u32, 0));
        self.wr(regs::ACQ_BASE_LO, ACQ as u32);
        self.wr(regs::ACQ_BASE_HI, 0);
        self.wr(regs::ACQ_CAPS, caps(DEPTH, 64, 0));
        self.wr(regs::AENQ_BASE_LO, AENQ as u32);
        self.wr(regs::AENQ_BASE_HI, 0);
        self.wr(regs::AENQ_CAPS, caps(AENQ_DEPTH, 64, 0));
        self.wr(regs::AENQ_CONS_DB, 0);
    }

    fn wr(&self, off: u64, value: u32) {
        self.f.region_write(0, off, &value.to_le_bytes()).unwrap();
    }

    fn mmio(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.f.region_read(0, off, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    /// `efa_com_reg_read32`.
    fn readless(&mut self, off: u16) -> Option<u32> {
        self.seq = self.seq.wrapping_add(1);
        self.ram_write(MMIO_RESP, &(self.seq.wrapping_add(0x9a)).to_le_bytes());
        self.wr(
            regs::MMIO_REG_READ,
            u32::from(self.seq) | (u32::from(off) << 16),
        );
        let resp = self.ram_read(MMIO_RESP, 8);
        let id = u16::from_le_bytes([resp[0], resp[1]]);
        let reg_off = u16::from_le_bytes([resp[2], resp[3]]);
        (id == self.seq && reg_off == off)
            .then(|| u32::from_le_bytes([resp[4], resp[5], resp[6], resp[7]]))
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

    /// Submits `cmd` (opcode and payload set) with descriptor `flags` as
    /// `__efa_com_submit_admin_cmd` does and returns the completion.
    fn exec_flags(&mut self, op: u8, flags: u8, mut cmd: Entry) -> Entry {
        let slot = self.pc % DEPTH;
        let id = (slot | (self.pc << DEPTH.trailing_zeros())) & 0xfff;
        let phase = u8::from((self.pc / DEPTH) % 2 == 0);
        cmd.set_u16(aq::COMMAND_ID, id);
        cmd.set_u8(aq::OPCODE, op);
        cmd.set_u8(aq::FLAGS, flags | phase);
        self.ram_write(
            AQ + (self.aq_entry * slot as usize) as u64,
            &self.submission(&cmd),
        );
        self.pc = self.pc.wrapping_add(1);
        self.wr(regs::AQ_PROD_DB, self.pc.into());
        let at = ACQ + 64 * u64::from(self.cc % DEPTH);
        let cqe = self.entry_at(at);
        let expected_phase = u8::from((self.cc / DEPTH) % 2 == 0);
        assert_eq!(cqe.u8(3) & 1, expected_phase, "completion for command {id}");
        assert_eq!(cqe.u16(0) & 0xfff, id, "completion echoes the command id");
        assert_eq!(
            cqe.u16(4),
            crc16_except(&cqe.0, 4),
            "efa_com_cqe_checksum_valid"
        );
        self.cc = self.cc.wrapping_add(1);
        cqe
    }

    /// `cmd` as the ring holds it: a 64-byte entry as it is, or moved into
    /// an `efa_admin_aq_entry_v2` (payload at byte 12) with its CRC16.
    fn submission(&self, cmd: &Entry) -> Vec<u8> {
        if self.aq_entry == 64 {
            return cmd.0.to_vec();
        }
        let mut v2 = vec![0u8; admin_queue::V2_ENTRY_SIZE];
        v2[..4].copy_from_slice(&cmd.0[..4]);
        v2[aq_v2::PAYLOAD..][..60].copy_from_slice(&cmd.0[4..]);
        let sum = crc16_except(&v2, aq_v2::CHECKSUM);
        v2[aq_v2::CHECKSUM..][..2].copy_from_slice(&sum.to_le_bytes());
        v2
    }

    fn exec(&mut self, op: u8, cmd: Entry) -> Entry {
        self.exec_flags(op, 0, cmd)
    }

    fn status(&mut self, op: u8, cmd: Entry) -> u8 {
        self.exec(op, cmd).u8(2)
    }

    fn ok(&mut self, op: u8, cmd: Entry) -> Entry {
        let resp = self.exec(op, cmd);
        assert_eq!(resp.u8(2), Status::Success as u8, "opcode {op} refused");
        resp
    }

    fn get_feature(&mut self, id: u8) -> Entry {
        let mut cmd = Entry::default();
        cmd.set_u8(l::feature::FEATURE_ID, id);
        self.exec(opcode::GET_FEATURE, cmd)
    }

    fn alloc(&mut self, op: u8) -> u16 {
        self.ok(op, Entry::default()).u16(l::RESP)
    }

    fn cq(&mut self, uar: u16, depth: u16, base: u64) -> Entry {
        let mut cmd = Entry::default();
        cmd.set_u8(l::create_cq::CAPS_2, 8);
        cmd.set_u16(l::create_cq::SUB_CQ_DEPTH, depth);
        cmd.set_u64(l::create_cq::CQ_BA, base);
        cmd.set_u16(l::create_cq::NUM_SUB_CQS, 1);
        cmd.set_u16(l::create_cq::UAR, uar);
        cmd
    }

    fn qp(&mut self, pd: u16, uar: u16, cq: u16) -> Entry {
        let mut cmd = Entry::default();
        cmd.set_u16(cq_l::PD, pd);
        cmd.set_u8(cq_l::QP_TYPE, cq_l::TYPE_UD);
        cmd.set_u64(cq_l::RQ_BASE, RING + 0x8000);
        cmd.set_u32(cq_l::SEND_CQ, cq.into());
        cmd.set_u32(cq_l::RECV_CQ, cq.into());
        cmd.set_u32(cq_l::SQ_RING_SIZE, 128 * 64);
        cmd.set_u32(cq_l::SQ_DEPTH, 128);
        cmd.set_u32(cq_l::RQ_RING_SIZE, 128 * 16);
        cmd.set_u32(cq_l::RQ_DEPTH, 128);
        cmd.set_u16(cq_l::UAR, uar);
        cmd
    }

    /// Takes QP `handle` through INIT and RTR to RTS, setting its Q_Key
    /// (`modify`'s 0x1111_1111) on the way, as libefa does.
    fn bring_to_rts(&mut self, handle: u32) {
        for state in [qp_state::INIT, qp_state::RTR, qp_state::RTS] {
            let mask = l::modify_qp::MASK_STATE | l::modify_qp::MASK_QKEY;
            self.ok(opcode::MODIFY_QP, modify(handle, mask, state, 0));
        }
    }

    /// An address handle in `pd` for `gid`; returns its number.
    fn ah(&mut self, pd: u16, gid: &[u8; 16]) -> u16 {
        let mut ah = Entry::default();
        ah.set_bytes(l::create_ah::DEST_ADDR, gid);
        ah.set_u16(l::create_ah::PD, pd);
        self.ok(opcode::CREATE_AH, ah).u16(8)
    }

    fn irqs(&self) -> u64 {
        self.irq.read().unwrap_or(0)
    }
}

fn modify(handle: u32, mask: u32, state: u32, cur: u32) -> Entry {
    let mut cmd = Entry::default();
    cmd.set_u32(l::modify_qp::MASK, mask);
    cmd.set_u32(l::modify_qp::HANDLE, handle);
    cmd.set_u32(l::modify_qp::STATE, state);
    cmd.set_u32(l::modify_qp::CUR_STATE, cur);
    cmd.set_u32(l::modify_qp::QKEY, 0x1111_1111);
    cmd
}

fn payload(off: usize, value: u32) -> Entry {
    let mut cmd = Entry::default();
    cmd.set_u32(off, value);
    cmd
}

/// A change that makes a valid command invalid.
type Mutation = fn(&mut Entry);

const ILLEGAL: u8 = Status::IllegalParameter as u8;
const BUSY: u8 = Status::ResourceBusy as u8;
const MALFORMED: u8 = Status::MalformedRequest as u8;
const UNSUPPORTED: u8 = Status::UnsupportedOpcode as u8;

#[test]
fn readless_reads_identity_and_status() {
    let mut rig = Rig::new();
    assert_eq!(rig.readless(0x0), Some(REGISTERS.version));
    assert_eq!(rig.readless(0x4), Some(REGISTERS.controller_version));
    let caps = rig.readless(0x8).unwrap();
    assert_eq!((caps >> 8) & 0xff, 48, "DMA width");
    assert_eq!((caps >> 1) & 0x1f, 20, "reset timeout");
    assert_eq!(rig.readless(0x58), Some(regs::DEV_STS_READY));
    assert_eq!(rig.readless(0x28), Some(caps_of(DEPTH)));
    // Without a response address nothing is written (the driver times out).
    rig.wr(regs::MMIO_RESP_LO, 0);
    assert_eq!(rig.readless(0x0), None);
    // An address outside guest RAM is refused, not a fault.
    rig.wr(regs::MMIO_RESP_LO, 0xffff_f000);
    rig.wr(regs::MMIO_RESP_HI, 0xffff);
    rig.wr(regs::MMIO_REG_READ, 0x0001);
}

fn caps_of(depth: u16) -> u32 {
    caps(depth, 64, 0)
}

#[test]
fn reset_handshake_clears_state_and_the_readless_address() {
    let mut rig = Rig::new();
    let pd = rig.alloc(opcode::ALLOC_PD);
    assert_eq!(pd, 0);
    // efa_com_dev_reset: reset with a reason, restore the address, poll.
    rig.wr(regs::DEV_CTL, 1 | (3 << 28));
    assert_eq!(rig.readless(0x58), None, "the reset forgot MMIO_RESP");
    rig.wr(regs::MMIO_RESP_HI, 0);
    rig.wr(regs::MMIO_RESP_LO, MMIO_RESP as u32);
    assert_eq!(rig.readless(0x58), Some(regs::DEV_STS_RESET_IN_PROGRESS));
    rig.wr(regs::DEV_CTL, 0);
    let sts = rig.readless(0x58).unwrap();
    assert_eq!(sts & regs::DEV_STS_RESET_IN_PROGRESS, 0);
    assert_ne!(sts & regs::DEV_STS_READY, 0);
    assert_eq!(rig.readless(0x18), Some(0), "AQ caps cleared");
    // The admin queue starts over; the old PD is gone.
    rig.pc = 0;
    rig.cc = 0;
    rig.ram_write(ACQ, &[0; 64 * DEPTH as usize]);
    rig.init_admin();
    assert_eq!(rig.status(opcode::DEALLOC_PD, payload(4, 0)), ILLEGAL);
    assert_eq!(rig.alloc(opcode::ALLOC_PD), 0);
}

#[test]
fn device_attributes_are_what_the_card_honours() {
    let mut rig = Rig::new();
    let attr = rig.get_feature(feature::DEVICE_ATTR);
    assert_eq!(attr.u8(2), 0);
    assert_eq!(attr.u64(8), feature::SUPPORTED);
    assert_eq!(attr.u64(16), limits::PAGE_SIZE_CAP);
    assert!(attr.u32(28) >= 1, "admin API version");
    assert_eq!(attr.u16(36), 0, "doorbells in BAR0");
    assert_eq!(attr.u32(40), 0b1011, "RDMA read, RNR retry and RDMA write");
    assert_eq!(attr.u32(44), limits::MAX_RDMA_SIZE);
    assert_eq!(attr.u64(48), EfaSettings::default().guid());
    let q = rig.get_feature(feature::QUEUE_ATTR_1);
    assert_eq!(q.u32(8), limits::MAX_QP);
    assert_eq!(q.u32(44), limits::MAX_MR_PAGES);
    assert_eq!(q.u32(52), limits::MAX_AH);
    assert_eq!(q.u32(56), limits::MAX_LLQ_SIZE);
    assert_eq!(q.u32(64 - 4) & 0xffff, 1, "one RDMA SGE");
    let net = rig.get_feature(feature::NETWORK_ATTR);
    assert_eq!(&net.0[8..24], &EfaSettings::default().gid);
    assert_eq!(&net.0[8..10], &[0xfe, 0x80]);
    assert_eq!(net.u32(24), limits::MTU);
    let eq = rig.get_feature(feature::EVENT_QUEUE_ATTR);
    assert_eq!((eq.u32(8), eq.u32(16)), (limits::MAX_EQ, 1));
    let aenq = rig.get_feature(feature::AENQ_CONFIG);
    assert_eq!(
        aenq.u32(8),
        0x1e,
        "fatal, warning, notification, keep-alive"
    );
    assert_eq!(rig.get_feature(feature::HW_HINTS).u16(8), 200);
    assert_eq!(rig.get_feature(feature::HOST_INFO).u8(2), UNSUPPORTED);
    assert_eq!(rig.get_feature(9).u8(2), UNSUPPORTED, "QUEUE_ATTR_2");
    assert_eq!(rig.get_feature(0).u8(2), UNSUPPORTED);
}

#[test]
fn set_feature_aenq_groups_and_host_info() {
    let mut rig = Rig::new();
    let mut cmd = Entry::default();
    cmd.set_u8(l::feature::FEATURE_ID, feature::AENQ_CONFIG);
    cmd.set_u32(l::feature::AENQ_ENABLED, 0x1e);
    assert_eq!(rig.status(opcode::SET_FEATURE, cmd), 0);
    assert_eq!(rig.get_feature(feature::AENQ_CONFIG).u32(12), 0x1e);
    cmd.set_u32(l::feature::AENQ_ENABLED, 0x01);
    assert_eq!(
        rig.status(opcode::SET_FEATURE, cmd),
        ILLEGAL,
        "link change is ENA's"
    );
    let mut host = Entry::default();
    host.set_u8(l::feature::FEATURE_ID, feature::HOST_INFO);
    host.set_u32(l::feature::CTRL_LENGTH, 180);
    host.set_u64(l::feature::CTRL_ADDRESS, BUF);
    rig.ram_write(BUF, b"7.3.4\0");
    assert_eq!(
        rig.exec_flags(opcode::SET_FEATURE, aq::FLAG_CTRL_DATA, host)
            .u8(2),
        0
    );
    assert_eq!(
        rig.status(opcode::SET_FEATURE, host),
        MALFORMED,
        "no ctrl_data flag"
    );
    host.set_u64(l::feature::CTRL_ADDRESS, RAM_SIZE - 8);
    let resp = rig.exec_flags(opcode::SET_FEATURE, aq::FLAG_CTRL_DATA, host);
    assert_eq!(resp.u8(2), MALFORMED, "buffer outside guest RAM");
    let mut ro = Entry::default();
    ro.set_u8(l::feature::FEATURE_ID, feature::DEVICE_ATTR);
    assert_eq!(rig.status(opcode::SET_FEATURE, ro), UNSUPPORTED);
}

#[test]
fn unknown_and_unimplemented_opcodes() {
    let mut rig = Rig::new();
    for op in [0, 22, 23, 24, 30, 200] {
        assert_eq!(
            rig.status(op, Entry::default()),
            Status::BadOpcode as u8,
            "{op}"
        );
    }
    for op in [opcode::ALLOC_MR, opcode::SERVICE, 25, 29] {
        assert_eq!(rig.status(op, Entry::default()), UNSUPPORTED, "{op}");
    }
}

#[test]
fn wrong_phase_is_malformed_and_the_queue_goes_on() {
    let mut rig = Rig::new();
    let mut cmd = Entry::default();
    cmd.set_u8(aq::OPCODE, opcode::ALLOC_PD);
    // Phase 0 on the first pass.
    rig.ram_write(AQ, &cmd.0);
    rig.pc = 1;
    rig.wr(regs::AQ_PROD_DB, 1);
    assert_eq!(rig.entry_at(ACQ).u8(2), MALFORMED);
    rig.cc = 1;
    assert_eq!(rig.alloc(opcode::ALLOC_PD), 0, "nothing was allocated");
}

#[test]
fn admin_api_v2_and_v1_submissions() {
    assert_eq!(crc16_except(b"123456789", 9), 0xb4c8, "CRC-16/USB check");
    let mut rig = Rig::new();
    assert_eq!(rig.readless(regs::VERSION as u16), Some(0x03), "API 0.3");
    // A 128-byte submission with a wrong checksum is malformed, and the
    // queue goes on.
    let mut cmd = Entry::default();
    cmd.set_u8(aq::OPCODE, opcode::ALLOC_PD);
    cmd.set_u8(aq::FLAGS, 1);
    let mut bad = rig.submission(&cmd);
    bad[aq_v2::PAYLOAD + 20] ^= 1;
    rig.ram_write(AQ, &bad);
    rig.pc = 1;
    rig.wr(regs::AQ_PROD_DB, 1);
    assert_eq!(rig.entry_at(ACQ).u8(2), MALFORMED);
    rig.cc = 1;
    assert_eq!(rig.alloc(opcode::ALLOC_PD), 0, "nothing was allocated");
    // The payload of a v2 entry is where 64-byte commands have it.
    let mut pd = Entry::default();
    pd.set_u16(l::PAYLOAD, 0);
    assert_eq!(rig.status(opcode::DEALLOC_PD, pd), 0);
    assert_ne!(rig.status(opcode::DEALLOC_PD, pd), 0, "freed once");

    // A driver of API 0.1 programs 64-byte entries; completions carry the
    // checksum all the same (Rig::exec checks it).
    let mut old = Rig::new();
    old.aq_entry = 64;
    old.init_admin();
    assert_eq!(old.alloc(opcode::ALLOC_PD), 0);
    // Any other size leaves the queue unusable.
    old.wr(regs::AQ_CAPS, caps(DEPTH, 96, 0));
    old.ram_write(AQ, &[0; 64]);
    old.wr(regs::AQ_PROD_DB, 1);
    assert_eq!(old.entry_at(ACQ + 64).u8(3) & 1, 0, "no completion");
}

#[test]
fn pds_and_uars_are_bounded_and_freed_once() {
    let mut rig = Rig::new();
    for i in 0..limits::MAX_PD {
        assert_eq!(u32::from(rig.alloc(opcode::ALLOC_PD)), i);
    }
    assert_eq!(
        rig.status(opcode::ALLOC_PD, Entry::default()),
        Status::ResourceAllocationFailure as u8
    );
    assert_eq!(rig.status(opcode::DEALLOC_PD, payload(4, 5)), 0);
    assert_eq!(
        rig.status(opcode::DEALLOC_PD, payload(4, 5)),
        ILLEGAL,
        "double free"
    );
    assert_eq!(rig.status(opcode::DEALLOC_PD, payload(4, 999)), ILLEGAL);
    assert_eq!(
        rig.status(opcode::DEALLOC_PD, payload(4, 6 | 1 << 16)),
        ILLEGAL,
        "MBZ"
    );
    assert_eq!(rig.alloc(opcode::ALLOC_PD), 5, "slot reused");
    let uar = rig.alloc(opcode::ALLOC_UAR);
    assert_eq!(rig.status(opcode::DEALLOC_UAR, payload(4, uar.into())), 0);
    assert_eq!(
        rig.status(opcode::DEALLOC_UAR, payload(4, uar.into())),
        ILLEGAL
    );
}

#[test]
fn eqs_cqs_and_their_references() {
    let mut rig = Rig::new();
    let uar = rig.alloc(opcode::ALLOC_UAR);
    let mut eq = Entry::default();
    eq.set_u16(l::create_eq::DEPTH, 256);
    eq.set_u8(l::create_eq::MSIX_VEC, 1);
    eq.set_u8(l::create_eq::CAPS, 4);
    eq.set_u64(l::create_eq::BA, RING);
    eq.set_u32(l::create_eq::EVENT_BITMASK, 1);
    let eqn = rig.ok(opcode::CREATE_EQ, eq).u16(8);
    for (field, value) in [
        (l::create_eq::DEPTH, 100),
        (l::create_eq::DEPTH, 512),
        (l::create_eq::MSIX_VEC, 0),
        (l::create_eq::MSIX_VEC, 9),
        (l::create_eq::CAPS, 8),
        (l::create_eq::EVENT_BITMASK, 3),
    ] {
        let mut bad = eq;
        if field == l::create_eq::DEPTH {
            bad.set_u16(field, value as u16);
        } else if field == l::create_eq::EVENT_BITMASK {
            bad.set_u32(field, value);
        } else {
            bad.set_u8(field, value as u8);
        }
        assert_eq!(
            rig.status(opcode::CREATE_EQ, bad),
            ILLEGAL,
            "{field}={value}"
        );
    }
    let mut outside = eq;
    outside.set_u64(l::create_eq::BA, RAM_SIZE - 0x100);
    assert_eq!(rig.status(opcode::CREATE_EQ, outside), ILLEGAL);
    // Arm it through the EQ doorbell.
    rig.wr(regs::EQ_DB, u32::from(eqn) | regs::EQ_DB_ARM);

    let mut cq = rig.cq(uar, 256, RING + 0x4000);
    cq.set_u8(l::create_cq::CAPS_1, l::create_cq::CAPS_1_INTERRUPT_MODE);
    cq.set_u16(l::create_cq::EQN, eqn);
    let resp = rig.ok(opcode::CREATE_CQ, cq);
    let idx = resp.u16(8);
    assert_eq!(resp.u16(10), 256);
    assert_eq!(u64::from(resp.u32(12)), regs::layout::cq_db(uar, idx));
    assert_eq!(resp.u32(16) & 1, 1, "doorbell valid");
    for (what, mutate) in [
        (
            "depth",
            (|c: &mut Entry| c.set_u16(l::create_cq::SUB_CQ_DEPTH, 3)) as fn(&mut Entry),
        ),
        ("entry size", |c| c.set_u8(l::create_cq::CAPS_2, 5)),
        ("src addr on 4 words", |c| {
            c.set_u8(l::create_cq::CAPS_2, 4 | 0x20)
        }),
        ("64-bit ids", |c| c.set_u8(l::create_cq::CAPS_2, 8 | 0x40)),
        ("virt", |c| c.set_u8(l::create_cq::CAPS_1, 0x40)),
        ("sub cqs", |c| c.set_u16(l::create_cq::NUM_SUB_CQS, 2)),
        ("uar", |c| c.set_u16(l::create_cq::UAR, 77)),
        ("eqn", |c| {
            c.set_u8(l::create_cq::CAPS_1, 0x20);
            c.set_u16(l::create_cq::EQN, 7);
        }),
        ("ring", |c| c.set_u64(l::create_cq::CQ_BA, RAM_SIZE - 64)),
    ] {
        let mut bad = cq;
        mutate(&mut bad);
        assert_eq!(rig.status(opcode::CREATE_CQ, bad), ILLEGAL, "{what}");
    }
    assert_eq!(rig.status(opcode::DESTROY_EQ, payload(4, eqn.into())), BUSY);
    assert_eq!(
        rig.status(opcode::DEALLOC_UAR, payload(4, uar.into())),
        BUSY
    );
    assert_eq!(rig.status(opcode::DESTROY_CQ, payload(4, idx.into())), 0);
    assert_eq!(
        rig.status(opcode::DESTROY_CQ, payload(4, idx.into())),
        ILLEGAL
    );
    assert_eq!(rig.status(opcode::DESTROY_EQ, payload(4, eqn.into())), 0);
    assert_eq!(
        rig.status(opcode::DESTROY_EQ, payload(4, eqn.into())),
        ILLEGAL
    );
}

#[test]
fn qp_lifecycle_and_state_machine() {
    let mut rig = Rig::new();
    let pd = rig.alloc(opcode::ALLOC_PD);
    let uar = rig.alloc(opcode::ALLOC_UAR);
    let cq = rig.cq(uar, 256, RING);
    let cqn = rig.ok(opcode::CREATE_CQ, cq).u16(8);
    let qp = rig.qp(pd, uar, cqn);
    let resp = rig.ok(opcode::CREATE_QP, qp);
    let handle = resp.u32(cq_l::RESP_HANDLE);
    let qpn = resp.u16(cq_l::RESP_QP_NUM);
    assert_eq!(qpn, 1);
    assert_eq!(
        u64::from(resp.u32(cq_l::RESP_SQ_DB)),
        regs::layout::sq_db(uar, 0)
    );
    assert_eq!(
        u64::from(resp.u32(cq_l::RESP_RQ_DB)),
        regs::layout::rq_db(uar, 0)
    );
    assert_eq!(resp.u32(cq_l::RESP_LLQ), 0);
    let second = rig.ok(opcode::CREATE_QP, qp);
    assert_eq!(
        u64::from(second.u32(cq_l::RESP_LLQ)),
        regs::layout::LLQ_SLOT
    );

    let s = l::modify_qp::MASK_STATE;
    // RESET -> RTR is not a transition.
    assert_eq!(
        rig.status(opcode::MODIFY_QP, modify(handle, s, qp_state::RTR, 0)),
        ILLEGAL
    );
    for state in [qp_state::INIT, qp_state::RTR, qp_state::RTS] {
        let mask = s | l::modify_qp::MASK_QKEY;
        assert_eq!(
            rig.status(opcode::MODIFY_QP, modify(handle, mask, state, 0)),
            0
        );
    }
    let q = rig.ok(opcode::QUERY_QP, payload(4, handle));
    assert_eq!((q.u32(8), q.u32(12)), (qp_state::RTS, 0x1111_1111));
    // A wrong current state, an RNR retry, a bad state value.
    let cur = s | l::modify_qp::MASK_CUR_STATE;
    assert_eq!(
        rig.status(
            opcode::MODIFY_QP,
            modify(handle, cur, qp_state::SQD, qp_state::INIT)
        ),
        ILLEGAL
    );
    assert_eq!(
        rig.status(
            opcode::MODIFY_QP,
            modify(handle, cur, qp_state::SQD, qp_state::RTS)
        ),
        0
    );
    assert_eq!(
        rig.status(opcode::MODIFY_QP, modify(handle, 1 << 4, 0, 0)),
        ILLEGAL
    );
    assert_eq!(
        rig.status(opcode::MODIFY_QP, modify(handle, s, 7, 0)),
        ILLEGAL
    );
    assert_eq!(
        rig.status(opcode::MODIFY_QP, modify(handle, s, qp_state::ERR, 0)),
        0
    );
    assert_eq!(
        rig.status(opcode::MODIFY_QP, modify(handle, s, qp_state::RTS, 0)),
        ILLEGAL
    );
    assert_eq!(
        rig.status(opcode::MODIFY_QP, modify(handle, s, qp_state::RESET, 0)),
        0
    );

    // The CQ, PD and UAR are in use.
    assert_eq!(rig.status(opcode::DESTROY_CQ, payload(4, cqn.into())), BUSY);
    assert_eq!(rig.status(opcode::DEALLOC_PD, payload(4, pd.into())), BUSY);
    assert_eq!(
        rig.status(opcode::DEALLOC_UAR, payload(4, uar.into())),
        BUSY
    );
    assert_eq!(rig.status(opcode::DESTROY_QP, payload(4, handle)), 0);
    assert_eq!(
        rig.status(opcode::DESTROY_QP, payload(4, handle)),
        ILLEGAL,
        "double destroy"
    );
    assert_eq!(rig.status(opcode::QUERY_QP, payload(4, handle)), ILLEGAL);
    // A new QP in the same slot gets another handle: the old one is stale.
    let again = rig.ok(opcode::CREATE_QP, qp).u32(cq_l::RESP_HANDLE);
    assert_eq!(again & 0xffff, handle & 0xffff);
    assert_ne!(again, handle);
    assert_eq!(
        rig.status(opcode::MODIFY_QP, modify(handle, s, 1, 0)),
        ILLEGAL
    );
}

#[test]
fn create_qp_refuses_bad_requests() {
    let mut rig = Rig::new();
    let pd = rig.alloc(opcode::ALLOC_PD);
    let uar = rig.alloc(opcode::ALLOC_UAR);
    let cq = rig.cq(uar, 256, RING);
    let cqn = rig.ok(opcode::CREATE_CQ, cq).u16(8);
    let good = rig.qp(pd, uar, cqn);
    let cases: [(&str, Mutation); 12] = [
        ("pd", |c| c.set_u16(cq_l::PD, 9)),
        ("uar", |c| c.set_u16(cq_l::UAR, 9)),
        ("type", |c| c.set_u8(cq_l::QP_TYPE, 3)),
        ("flags", |c| c.set_u8(cq_l::FLAGS, 1)),
        ("send cq", |c| c.set_u32(cq_l::SEND_CQ, 5)),
        ("recv cq", |c| c.set_u32(cq_l::RECV_CQ, 1 << 20)),
        ("sq depth", |c| {
            c.set_u32(cq_l::SQ_DEPTH, limits::MAX_SQ_DEPTH + 1)
        }),
        ("sq ring", |c| {
            c.set_u32(cq_l::SQ_RING_SIZE, limits::MAX_LLQ_SIZE + 1)
        }),
        ("rq depth", |c| {
            c.set_u32(cq_l::RQ_DEPTH, limits::MAX_RQ_DEPTH + 1)
        }),
        ("rq ring outside RAM", |c| {
            c.set_u64(cq_l::RQ_BASE, RAM_SIZE - 16)
        }),
        ("rq ring without depth", |c| c.set_u32(cq_l::RQ_DEPTH, 0)),
        ("reserved", |c| c.set_u32(cq_l::RESERVED2, 1)),
    ];
    for (what, mutate) in cases {
        let mut bad = good;
        mutate(&mut bad);
        assert_eq!(rig.status(opcode::CREATE_QP, bad), ILLEGAL, "{what}");
    }
    for _ in 0..limits::MAX_QP {
        rig.ok(opcode::CREATE_QP, good);
    }
    let full = rig.status(opcode::CREATE_QP, good);
    assert_eq!(full, Status::ResourceAllocationFailure as u8);
}

#[test]
fn address_handles_are_unique_per_pd_and_gid() {
    let mut rig = Rig::new();
    let pd = rig.alloc(opcode::ALLOC_PD);
    let other = rig.alloc(opcode::ALLOC_PD);
    let mut ah = Entry::default();
    ah.set_bytes(
        l::create_ah::DEST_ADDR,
        &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
    );
    ah.set_u16(l::create_ah::PD, pd);
    let n = rig.ok(opcode::CREATE_AH, ah).u16(8);
    assert_eq!(
        rig.status(opcode::CREATE_AH, ah),
        ILLEGAL,
        "same destination twice"
    );
    let mut elsewhere = ah;
    elsewhere.set_u16(l::create_ah::PD, other);
    rig.ok(opcode::CREATE_AH, elsewhere);
    elsewhere.set_u16(l::create_ah::PD, 40);
    assert_eq!(
        rig.status(opcode::CREATE_AH, elsewhere),
        ILLEGAL,
        "no such PD"
    );
    assert_eq!(rig.status(opcode::DEALLOC_PD, payload(4, pd.into())), BUSY);
    let destroy = |ah: u16, pd: u16| payload(4, u32::from(ah) | u32::from(pd) << 16);
    assert_eq!(
        rig.status(opcode::DESTROY_AH, destroy(n, other)),
        ILLEGAL,
        "wrong PD"
    );
    assert_eq!(rig.status(opcode::DESTROY_AH, destroy(n, pd)), 0);
    assert_eq!(
        rig.status(opcode::DESTROY_AH, destroy(n, pd)),
        ILLEGAL,
        "double destroy"
    );
    assert_eq!(rig.status(opcode::DEALLOC_PD, payload(4, pd.into())), 0);
}

fn reg_mr(pd: u16, iova: u64, length: u64, shift: u8, pages: u32) -> Entry {
    let mut cmd = Entry::default();
    cmd.set_u16(mr_l::PD, pd);
    cmd.set_u64(mr_l::MR_LENGTH, length);
    cmd.set_u8(mr_l::FLAGS, shift);
    cmd.set_u8(mr_l::PERMISSIONS, mr_l::ACCESS_LOCAL_WRITE);
    cmd.set_u32(mr_l::PAGE_NUM, pages);
    cmd.set_u64(mr_l::IOVA, iova);
    cmd
}

#[test]
fn memory_regions_inline_direct_and_indirect() {
    let mut rig = Rig::new();
    let pd = rig.alloc(opcode::ALLOC_PD);
    // Inline: three pages, starting mid-page.
    let mut inline = reg_mr(pd, 0x7000_0800, 0x2000, 12, 3);
    for (i, page) in [0x10_0000u64, 0x20_0000, 0x11_0000].into_iter().enumerate() {
        inline.set_u64(mr_l::PBL + 8 * i, page);
    }
    let resp = rig.ok(opcode::REG_MR, inline);
    let key = resp.u32(8);
    // efa.ko leaves page_num 0: the card counts the pages itself.
    let mut uncounted = inline;
    uncounted.set_u32(mr_l::PAGE_NUM, 0);
    rig.ok(opcode::REG_MR, uncounted);
    assert_eq!(resp.u32(12), key, "r_key");
    // Direct: 100 pages listed in a control buffer.
    let pages: Vec<u64> = (0..100).map(|i| 0x10_0000 + 0x1000 * i).collect();
    let bytes: Vec<u8> = pages.iter().flat_map(|p| p.to_le_bytes()).collect();
    rig.ram_write(BUF, &bytes);
    let mut direct = reg_mr(pd, 0x1000, 100 * 4096, 12, 100);
    direct.set_u32(mr_l::PBL, 800);
    direct.set_u64(mr_l::PBL + 4, BUF);
    rig.ok_flags(opcode::REG_MR, aq::FLAG_CTRL_DATA, direct);
    let mut short = direct;
    short.set_u32(mr_l::PBL, 792);
    assert_eq!(
        rig.exec_flags(opcode::REG_MR, aq::FLAG_CTRL_DATA, short)
            .u8(2),
        MALFORMED
    );
    // A listed page outside guest RAM, or unaligned.
    rig.ram_write(BUF + 8 * 99, &RAM_SIZE.to_le_bytes());
    assert_eq!(
        rig.exec_flags(opcode::REG_MR, aq::FLAG_CTRL_DATA, direct)
            .u8(2),
        ILLEGAL
    );
    rig.ram_write(BUF + 8 * 99, &0x10_0010u64.to_le_bytes());
    assert_eq!(
        rig.exec_flags(opcode::REG_MR, aq::FLAG_CTRL_DATA, direct)
            .u8(2),
        ILLEGAL
    );

    // Indirect: 1030 pages; the address buffer spans 3 pages, listed in
    // one chunk (a chain needs more than 510 buffer pages: see below).
    let count = 1030u64;
    let buffer = [0x30_0000u64, 0x30_2000, 0x30_4000];
    for i in 0..count {
        let at = buffer[(i / 512) as usize] + 8 * (i % 512);
        rig.ram_write(at, &(0x10_0000 + 0x1000 * (i % 512)).to_le_bytes());
    }
    let chunk = 0x38_0000u64;
    for (i, page) in buffer.iter().enumerate() {
        rig.ram_write(chunk + 8 * i as u64, &page.to_le_bytes());
    }
    let mut indirect = reg_mr(pd, 0, count * 4096, 12, count as u32);
    indirect.set_u32(mr_l::PBL, 3 * 8 + 12);
    indirect.set_u64(mr_l::PBL + 4, chunk);
    let both = aq::FLAG_CTRL_DATA | aq::FLAG_CTRL_DATA_INDIRECT;
    let key3 = rig.ok_flags(opcode::REG_MR, both, indirect).u32(8);
    let mut wrong_len = indirect;
    wrong_len.set_u32(mr_l::PBL, 4092);
    assert_eq!(
        rig.exec_flags(opcode::REG_MR, both, wrong_len).u8(2),
        MALFORMED
    );
    assert_eq!(
        rig.exec_flags(opcode::REG_MR, aq::FLAG_CTRL_DATA_INDIRECT, indirect)
            .u8(2),
        MALFORMED,
        "indirect without ctrl_data"
    );

    // Length and page count must agree; page sizes outside the cap, remote
    // access and physical mode are refused.
    for (what, cmd) in [
        ("pages", reg_mr(pd, 0x800, 0x1000, 12, 1)),
        ("zero length", reg_mr(pd, 0, 0, 12, 1)),
        ("page size", reg_mr(pd, 0, 0x2000, 13, 1)),
        ("too many inline", reg_mr(pd, 0, 5 * 4096, 12, 5)),
        ("over the MR limit", reg_mr(pd, 0, 65537 * 4096, 12, 0)),
        ("pd", reg_mr(7, 0, 4096, 12, 1)),
        ("overflow", reg_mr(pd, u64::MAX - 10, 4096, 12, 1)),
    ] {
        let status = rig.status(opcode::REG_MR, cmd);
        assert!(status == ILLEGAL || status == MALFORMED, "{what}: {status}");
    }
    let mut remote = inline;
    remote.set_u8(mr_l::PERMISSIONS, 0x8);
    assert_eq!(
        rig.status(opcode::REG_MR, remote),
        ILLEGAL,
        "unknown permission"
    );
    let mut phys = inline;
    phys.set_u8(mr_l::FLAGS, 12 | 0x80);
    assert_eq!(rig.status(opcode::REG_MR, phys), ILLEGAL);

    assert_eq!(rig.status(opcode::DEALLOC_PD, payload(4, pd.into())), BUSY);
    assert_eq!(rig.status(opcode::DEREG_MR, payload(4, key)), 0);
    assert_eq!(
        rig.status(opcode::DEREG_MR, payload(4, key)),
        ILLEGAL,
        "double dereg"
    );
    assert_eq!(
        rig.status(opcode::DEREG_MR, payload(4, key3 ^ 1)),
        ILLEGAL,
        "stale key"
    );
    assert_eq!(rig.status(opcode::DEREG_MR, payload(4, key3)), 0);
}

#[test]
fn indirect_page_lists_follow_the_chunk_chain() {
    let mut rig = Rig::new();
    let pd = rig.alloc(opcode::ALLOC_PD);
    // 600 buffer pages (307200 MR pages would exceed the per-MR limit, so
    // use 2 MiB pages: 65536 is the limit) -> take 65536 pages: 128 buffer
    // pages in one chunk. A chain needs > 510 buffer pages, i.e. more
    // pages than one MR may have: check the link is followed by lying
    // about the per-chunk capacity instead.
    let count = 1024u64; // two buffer pages
    for i in 0..count {
        rig.ram_write(0x30_0000 + 8 * i, &0x20_0000u64.to_le_bytes());
    }
    let chunk = 0x38_0000u64;
    rig.ram_write(chunk, &0x30_0000u64.to_le_bytes());
    rig.ram_write(chunk + 8, &0x30_1000u64.to_le_bytes());
    let mut cmd = reg_mr(pd, 0, count << 21, 21, count as u32);
    cmd.set_u32(mr_l::PBL, 2 * 8 + 12);
    cmd.set_u64(mr_l::PBL + 4, chunk);
    let both = aq::FLAG_CTRL_DATA | aq::FLAG_CTRL_DATA_INDIRECT;
    rig.ok_flags(opcode::REG_MR, both, cmd);
    // A chunk list that leaves guest RAM.
    cmd.set_u64(mr_l::PBL + 4, RAM_SIZE - 8);
    assert_eq!(rig.exec_flags(opcode::REG_MR, both, cmd).u8(2), MALFORMED);
    assert_eq!(pbl::PTRS_PER_CHUNK, 510);
}

#[test]
fn stats_of_every_type_at_device_scope() {
    let mut rig = Rig::new();
    for kind in 0..=4u8 {
        let mut cmd = Entry::default();
        cmd.set_u8(l::get_stats::TYPE, kind);
        assert_eq!(rig.status(opcode::GET_STATS, cmd), 0, "type {kind}");
    }
    let mut cmd = Entry::default();
    cmd.set_u8(l::get_stats::TYPE, 5);
    assert_eq!(rig.status(opcode::GET_STATS, cmd), ILLEGAL);
    cmd.set_u8(l::get_stats::TYPE, 0);
    cmd.set_u8(l::get_stats::SCOPE, 1);
    assert_eq!(rig.status(opcode::GET_STATS, cmd), UNSUPPORTED);
}

#[test]
fn admin_completions_interrupt_only_when_unmasked() {
    let mut rig = Rig::new();
    rig.irqs();
    rig.alloc(opcode::ALLOC_PD);
    assert_eq!(rig.irqs(), 0, "polling mode: masked");
    rig.wr(regs::INTR_MASK, 0);
    rig.alloc(opcode::ALLOC_PD);
    assert_eq!(rig.irqs(), 1, "vector 0 on completion");
}

#[test]
fn keep_alives_arrive_on_the_aenq_with_an_interrupt() {
    let mut rig = Rig::with_period(Duration::from_millis(20));
    rig.wr(regs::INTR_MASK, 0);
    let mut cmd = Entry::default();
    cmd.set_u8(l::feature::FEATURE_ID, feature::AENQ_CONFIG);
    cmd.set_u32(l::feature::AENQ_ENABLED, limits::AENQ_SUPPORTED_GROUPS);
    rig.ok(opcode::SET_FEATURE, cmd);
    rig.irqs();
    let deadline = Instant::now() + Duration::from_secs(5);
    // More than a ring of events: the card stops when the ring is full
    // until the driver's consumer doorbell frees slots.
    let mut seen = 0u16;
    while seen < AENQ_DEPTH + 4 && Instant::now() < deadline {
        let e = rig.entry_at(AENQ + 64 * u64::from(seen % AENQ_DEPTH));
        let phase = u8::from((seen / AENQ_DEPTH) % 2 == 0);
        if e.u8(4) & 1 == phase {
            assert_eq!(e.u16(0), group::KEEP_ALIVE);
            seen += 1;
            rig.wr(regs::AENQ_CONS_DB, seen.into());
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(seen, AENQ_DEPTH + 4, "keep-alives wrapped the ring");
    assert!(rig.irqs() >= 1);
    // A reset stops the timer.
    rig.wr(regs::DEV_CTL, 1);
    rig.wr(regs::DEV_CTL, 0);
    let before = rig.entry_at(AENQ);
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(rig.entry_at(AENQ), before);
}

#[test]
fn the_register_file_ignores_odd_writes() {
    let rig = Rig::new();
    rig.f.region_write(0, regs::INTR_MASK, &[0]).unwrap();
    rig.f.region_write(0, regs::INTR_MASK + 1, &[0; 4]).unwrap();
    assert_eq!(rig.mmio(regs::INTR_MASK), 1);
    rig.wr(0x0, 0xdead);
    assert_eq!(rig.mmio(0x0), REGISTERS.version);
    rig.wr(regs::EQ_DB, 5 | regs::EQ_DB_ARM);
    assert_eq!(rig.mmio(regs::EQ_DB), 5 | regs::EQ_DB_ARM);
}

impl Rig {
    fn ok_flags(&mut self, op: u8, flags: u8, cmd: Entry) -> Entry {
        let resp = self.exec_flags(op, flags, cmd);
        assert_eq!(resp.u8(2), 0, "opcode {op} refused");
        resp
    }
}

/// A submission built from arbitrary bytes around a valid opcode, with
/// arbitrary descriptor flags.
fn any_command() -> impl Strategy<Value = (u8, u8, [u8; 60])> {
    (
        prop_oneof![1u8..=21, 25u8..=29, any::<u8>()],
        any::<u8>(),
        prop::array::uniform32(any::<u8>()).prop_flat_map(|a| {
            prop::array::uniform28(any::<u8>()).prop_map(move |b| {
                let mut out = [0u8; 60];
                out[..32].copy_from_slice(&a);
                out[32..].copy_from_slice(&b);
                out
            })
        }),
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: crate::testing::fuzz_rounds(128) as u32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever the driver submits, the card completes it (no panic, no
    /// hang, nothing written outside the completion ring), and the queue
    /// keeps working.
    #[test]
    fn random_admin_submissions_always_complete(cmds in prop::collection::vec(any_command(), 1..12)) {
        let mut rig = Rig::new();
        // Objects for the generated commands to name.
        rig.alloc(opcode::ALLOC_PD);
        rig.alloc(opcode::ALLOC_UAR);
        let guard = vec![0xa5u8; 0x1000];
        rig.ram_write(RAM_SIZE - 0x1000, &guard);
        for (op, flags, body) in cmds {
            let mut cmd = Entry::default();
            cmd.set_bytes(4, &body);
            let flags = flags & !aq::FLAG_PHASE;
            let resp = rig.exec_flags(op, flags, cmd);
            prop_assert!(resp.u8(2) <= Status::ResourceBusy as u8);
        }
        prop_assert_eq!(rig.ram_read(RAM_SIZE - 0x1000, 0x1000), guard);
        let pd = rig.alloc(opcode::ALLOC_PD);
        prop_assert!(u32::from(pd) < limits::MAX_PD);
    }
}

/// Writes `bytes` at BAR0 offset `off` in the mapped doorbell pages, as a
/// guest store there does (no trap).
fn ring(rig: &Rig, off: u64, value: u32) {
    rig.f
        .doorbells()
        .unwrap()
        .write_slice(
            &value.to_le_bytes(),
            (off - crate::function::layout::DOORBELL_OFFSET) as usize,
        )
        .unwrap();
}

/// Writes `wqe` as SQ entry `n` (0-based, first pass) of QP slot 0's LLQ
/// and rings its doorbell with the producer counter `n + 1`.
fn push_wqe(rig: &Rig, n: u32, wqe: &[u8; 64]) {
    rig.f
        .llq_memory()
        .unwrap()
        .write_slice(wqe, 64 * n as usize)
        .unwrap();
    ring(rig, regs::layout::sq_db(0, 0), n + 1);
}

fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// Two QPs of `qp_type` in RTS on one CQ (64 entries of 32 bytes at
/// RING), one MR over two pages at 0x20_0000 (IOVA 0x1000_0000), an AH for
/// the function's own GID; returns (L_Key, AH).
fn loopback(rig: &mut Rig, qp_type: u8) -> (u32, u16) {
    let pd = rig.alloc(opcode::ALLOC_PD);
    let uar = rig.alloc(opcode::ALLOC_UAR);
    let mut cq = rig.cq(uar, 64, RING);
    cq.set_u8(l::create_cq::CAPS_2, 8 | l::create_cq::CAPS_2_SET_SRC_ADDR);
    let cqn = rig.ok(opcode::CREATE_CQ, cq).u16(8);
    let mut handles = Vec::new();
    for _ in 0..2 {
        let mut qp = rig.qp(pd, uar, cqn);
        qp.set_u8(cq_l::QP_TYPE, qp_type);
        qp.set_u64(cq_l::RQ_BASE, RING + 0x8000 + 0x1000 * handles.len() as u64);
        let h = rig.ok(opcode::CREATE_QP, qp).u32(cq_l::RESP_HANDLE);
        rig.bring_to_rts(h);
        handles.push(h);
    }
    // One MR over 2 pages at 0x20_0000 (IOVA 0x1000_0000).
    let mut mr = reg_mr(pd, 0x1000_0000, 0x2000, 12, 2);
    mr.set_u64(mr_l::PBL, 0x20_0000);
    mr.set_u64(mr_l::PBL + 8, 0x20_1000);
    let lkey = rig.ok(opcode::REG_MR, mr).u32(8);
    let ahn = rig.ah(pd, &EfaSettings::default().gid);
    (lkey, ahn)
}

/// A send WQE of QP 1 to QP 2: 100 bytes at IOVA + 0x10, request id 5.
fn send_wqe(lkey: u32, ahn: u16, phase: u8) -> [u8; 64] {
    let mut wqe = [0u8; 64];
    wqe[0..2].copy_from_slice(&5u16.to_le_bytes());
    wqe[2] = 0x80; // meta descriptor, SEND
    wqe[3] = phase | 0x04 | 0x08 | 0x10; // first, last, completion
    wqe[4..6].copy_from_slice(&2u16.to_le_bytes());
    wqe[6..8].copy_from_slice(&1u16.to_le_bytes());
    wqe[12..14].copy_from_slice(&ahn.to_le_bytes());
    wqe[16..20].copy_from_slice(&0x1111_1111u32.to_le_bytes());
    wqe[32..36].copy_from_slice(&100u32.to_le_bytes());
    wqe[36..40].copy_from_slice(&lkey.to_le_bytes());
    wqe[40..48].copy_from_slice(&0x1000_0010u64.to_le_bytes());
    wqe
}

#[test]
fn each_uar_has_a_doorbell_page_of_its_own() {
    let mut rig = Rig::new();
    let pd = rig.alloc(opcode::ALLOC_PD);
    let uars = [rig.alloc(opcode::ALLOC_UAR), rig.alloc(opcode::ALLOC_UAR)];
    let page = |off: u32| u64::from(off) / regs::layout::UAR_PAGE;
    let mut qps = Vec::new();
    for (i, &uar) in uars.iter().enumerate() {
        let cq = rig.cq(uar, 64, RING + 0x1000 * i as u64);
        let cq = rig.ok(opcode::CREATE_CQ, cq);
        let cqn = cq.u16(l::create_cq::RESP_IDX);
        let mut qp = rig.qp(pd, uar, cqn);
        qp.set_u8(cq_l::QP_TYPE, cq_l::TYPE_UD);
        qp.set_u64(cq_l::RQ_BASE, RING + 0x8000 + 0x1000 * i as u64);
        let qp = rig.ok(opcode::CREATE_QP, qp);
        let h = qp.u32(cq_l::RESP_HANDLE);
        rig.bring_to_rts(h);
        let dbs = [cq_l::RESP_SQ_DB, cq_l::RESP_RQ_DB].map(|f| page(qp.u32(f)));
        assert_eq!(dbs, [page(cq.u32(l::create_cq::RESP_DB)); 2], "UAR {uar}");
        qps.push(dbs[0]);
    }
    assert_ne!(qps[0], qps[1], "two UARs, two doorbell pages");
    let mut mr = reg_mr(pd, 0x1000_0000, 0x1000, 12, 1);
    mr.set_u64(mr_l::PBL, 0x20_0000);
    let lkey = rig.ok(opcode::REG_MR, mr).u32(8);
    let ahn = rig.ah(pd, &EfaSettings::default().gid);

    // QP slot 0 belongs to the first UAR: its SQ doorbell rung in the
    // second UAR's page (where another process's mapping would reach) is
    // not its doorbell.
    rig.f
        .llq_memory()
        .unwrap()
        .write_slice(&send_wqe(lkey, ahn, 0), 0)
        .unwrap();
    ring(&rig, regs::layout::sq_db(uars[1], 0), 1);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(rig.ram_read(RING, 32)[3] & 1, 0, "no completion");
    ring(&rig, regs::layout::sq_db(uars[0], 0), 1);
    assert!(wait_for(|| rig.ram_read(RING, 32)[3] & 1 == 1));
    assert_eq!(rig.ram_read(RING + 0x1000, 32)[3] & 1, 0, "other CQ");
}

#[test]
fn ud_send_is_delivered_to_a_qp_of_the_same_function() {
    let mut rig = Rig::new();
    let cq_ring = RING;
    let (lkey, ahn) = loopback(&mut rig, cq_l::TYPE_UD);

    // QP 2 posts a receive of 200 bytes at IOVA + 0xfc0 (crosses pages).
    let mut rx = [0u8; 16];
    rx[0..8].copy_from_slice(&0x1000_0fc0u64.to_le_bytes());
    rx[8..10].copy_from_slice(&7u16.to_le_bytes());
    rx[10..12].copy_from_slice(&200u16.to_le_bytes());
    rx[12..16].copy_from_slice(&(lkey | 3 << 30).to_le_bytes());
    rig.ram_write(RING + 0x9000, &rx);
    ring(&rig, regs::layout::rq_db(0, 1), 1);
    // QP 1 sends 100 bytes from IOVA + 0x10 to QP number 2.
    let payload: Vec<u8> = (0..100u8).collect();
    rig.ram_write(0x20_0010, &payload);
    let mut wqe = send_wqe(lkey, ahn, 0);
    push_wqe(&rig, 0, &wqe);

    assert!(
        wait_for(|| rig.ram_read(cq_ring + 32, 32)[3] & 1 == 1),
        "two completions"
    );
    let tx = rig.ram_read(cq_ring, 32);
    assert_eq!((tx[0], tx[2], tx[3] >> 1 & 3), (5, 0, 1), "send completion");
    let rxc = rig.ram_read(cq_ring + 32, 32);
    assert_eq!(
        (rxc[0], rxc[2], rxc[3] >> 1 & 3),
        (7, 0, 2),
        "receive completion"
    );
    assert_eq!(u16::from_le_bytes([rxc[4], rxc[5]]), 2, "qp_num");
    assert_eq!(u16::from_le_bytes([rxc[6], rxc[7]]), 100, "length");
    assert_eq!(
        u16::from_le_bytes([rxc[8], rxc[9]]),
        ahn,
        "the receiver's AH for the sender"
    );
    assert_eq!(u16::from_le_bytes([rxc[10], rxc[11]]), 1, "source QP");
    let mut got = rig.ram_read(0x20_0fc0, 0x40);
    got.extend(rig.ram_read(0x20_1000, 100 - 0x40));
    assert_eq!(got, payload, "payload across the page boundary");

    // A wrong Q_Key is dropped; the sender still completes.
    wqe[3] = 0x1c;
    wqe[16..20].copy_from_slice(&0x2222_2222u32.to_le_bytes());
    push_wqe(&rig, 1, &wqe);
    assert!(wait_for(|| rig.ram_read(cq_ring + 64, 32)[3] & 1 == 1));
    assert_eq!(
        rig.ram_read(cq_ring + 96, 32)[3] & 1,
        0,
        "no receive completion"
    );
    let mut stats = Entry::default();
    stats.set_u8(l::get_stats::TYPE, 0);
    let basic = rig.ok(opcode::GET_STATS, stats);
    assert_eq!(
        (basic.u64(8 + 8), basic.u64(8 + 24), basic.u64(8 + 32)),
        (2, 1, 1),
        "tx, rx, drops"
    );
    // A bad L_Key completes with an error.
    wqe[16..20].copy_from_slice(&0x1111_1111u32.to_le_bytes());
    wqe[36..40].copy_from_slice(&(lkey ^ 0x100).to_le_bytes());
    push_wqe(&rig, 2, &wqe);
    assert!(wait_for(|| rig.ram_read(cq_ring + 96, 32)[3] & 1 == 1));
    assert_eq!(
        rig.ram_read(cq_ring + 96, 32)[2],
        datapath::status::INVALID_LKEY
    );
    // A QP in the error state flushes its sends; one not in RTS refuses.
    wqe[36..40].copy_from_slice(&lkey.to_le_bytes());
    for (n, state, expected) in [
        (4u32, qp_state::ERR, datapath::status::FLUSHED),
        (5, qp_state::RESET, datapath::status::QP_INTERNAL_ERROR),
    ] {
        let handle = 0x1_0000;
        rig.ok(
            opcode::MODIFY_QP,
            modify(handle, l::modify_qp::MASK_STATE, state, 0),
        );
        push_wqe(&rig, n - 1, &wqe);
        let at = cq_ring + 32 * u64::from(n);
        assert!(wait_for(|| rig.ram_read(at, 32)[3] & 1 == 1));
        assert_eq!(rig.ram_read(at, 32)[2], expected, "state {state}");
    }
}

#[test]
fn srd_senders_learn_whether_a_receive_took_the_message() {
    let mut rig = Rig::new();
    let (lkey, ahn) = loopback(&mut rig, cq_l::TYPE_SRD);
    // No receive posted: the sender gets RNR.
    let wqe = send_wqe(lkey, ahn, 0);
    push_wqe(&rig, 0, &wqe);
    assert!(wait_for(|| rig.ram_read(RING, 32)[3] & 1 == 1));
    assert_eq!(rig.ram_read(RING, 32)[2], datapath::status::RNR);
    // With a receive posted, the receive completes first, then the send.
    let mut rx = [0u8; 16];
    rx[0..8].copy_from_slice(&0x1000_0800u64.to_le_bytes());
    rx[10..12].copy_from_slice(&200u16.to_le_bytes());
    rx[12..16].copy_from_slice(&(lkey | 3 << 30).to_le_bytes());
    rig.ram_write(RING + 0x9000, &rx);
    ring(&rig, regs::layout::rq_db(0, 1), 1);
    push_wqe(&rig, 1, &wqe);
    assert!(wait_for(|| rig.ram_read(RING + 64, 32)[3] & 1 == 1));
    let (rxc, txc) = (rig.ram_read(RING + 32, 32), rig.ram_read(RING + 64, 32));
    assert_eq!((rxc[2], rxc[3] >> 1 & 3), (0, 2), "receive");
    assert_eq!((txc[2], txc[3] >> 1 & 3), (0, 1), "send");
    // A send to a GID the function does not have cannot be reached.
    let mut other = Entry::default();
    other.set_bytes(
        l::create_ah::DEST_ADDR,
        &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9],
    );
    let far = rig.ok(opcode::CREATE_AH, other).u16(8);
    push_wqe(&rig, 2, &send_wqe(lkey, far, 0));
    assert!(wait_for(|| rig.ram_read(RING + 96, 32)[3] & 1 == 1));
    assert_eq!(
        rig.ram_read(RING + 96, 32)[2],
        datapath::status::UNREACH_REMOTE
    );
}

/// One QP of `qp_type` in RTS (QP number 1) on a CQ of 64 32-byte entries
/// at RING, the MR of [`loopback`] and an AH for `peer`; returns (L_Key,
/// AH).
fn endpoint(rig: &mut Rig, qp_type: u8, peer: [u8; 16]) -> (u32, u16) {
    endpoint_with(rig, qp_type, peer, mr_l::ACCESS_LOCAL_WRITE)
}

/// [`endpoint`] with MR permissions `access`.
fn endpoint_with(rig: &mut Rig, qp_type: u8, peer: [u8; 16], access: u8) -> (u32, u16) {
    let pd = rig.alloc(opcode::ALLOC_PD);
    let uar = rig.alloc(opcode::ALLOC_UAR);
    let mut cq = rig.cq(uar, 64, RING);
    cq.set_u8(l::create_cq::CAPS_2, 8 | l::create_cq::CAPS_2_SET_SRC_ADDR);
    let cqn = rig.ok(opcode::CREATE_CQ, cq).u16(8);
    let mut qp = rig.qp(pd, uar, cqn);
    qp.set_u8(cq_l::QP_TYPE, qp_type);
    let h = rig.ok(opcode::CREATE_QP, qp).u32(cq_l::RESP_HANDLE);
    rig.bring_to_rts(h);
    let mut mr = reg_mr(pd, 0x1000_0000, 0x2000, 12, 2);
    mr.set_u64(mr_l::PBL, 0x20_0000);
    mr.set_u64(mr_l::PBL + 8, 0x20_1000);
    mr.set_u8(mr_l::PERMISSIONS, access);
    let lkey = rig.ok(opcode::REG_MR, mr).u32(8);
    (lkey, rig.ah(pd, &peer))
}

/// Posts receive `n` (0-based) of 200 bytes at IOVA 0x1000_0800 on QP 1.
fn post_receive(rig: &Rig, lkey: u32, n: u32) {
    let mut rx = [0u8; 16];
    rx[0..8].copy_from_slice(&0x1000_0800u64.to_le_bytes());
    rx[8..10].copy_from_slice(&(40 + n as u16).to_le_bytes());
    rx[10..12].copy_from_slice(&200u16.to_le_bytes());
    rx[12..16].copy_from_slice(&(lkey | 3 << 30).to_le_bytes());
    rig.ram_write(RING + 0x8000 + 16 * u64::from(n), &rx);
    ring(rig, regs::layout::rq_db(0, 0), n + 1);
}

/// Sends WQE `n` (0-based) of QP 1 (to QP 1 of the AH's GID).
fn post_send(rig: &Rig, lkey: u32, ahn: u16, n: u32) {
    let mut wqe = send_wqe(lkey, ahn, 0);
    wqe[4..6].copy_from_slice(&1u16.to_le_bytes());
    push_wqe(rig, n, &wqe);
}

fn cqe(rig: &Rig, n: u64) -> Option<Vec<u8>> {
    let e = rig.ram_read(RING + 32 * n, 32);
    (e[3] & 1 == 1).then_some(e)
}

#[test]
fn functions_on_one_fabric_reach_each_other_by_gid() {
    let fabric = Arc::new(fabric::Fabric::new());
    let (gid_a, gid_b) = (
        EfaSettings::derived_from(b"a").gid,
        EfaSettings::derived_from(b"b").gid,
    );
    for qp_type in [cq_l::TYPE_UD, cq_l::TYPE_SRD] {
        let mut a = Rig::on_fabric(&fabric, gid_a);
        let mut b = Rig::on_fabric(&fabric, gid_b);
        let (lkey_a, ah_a) = endpoint(&mut a, qp_type, gid_b);
        let (lkey_b, _) = endpoint(
            &mut b,
            qp_type,
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9],
        );
        let payload: Vec<u8> = (100..200u8).collect();
        a.ram_write(0x20_0010, &payload);
        post_receive(&b, lkey_b, 0);
        post_send(&a, lkey_a, ah_a, 0);
        assert!(
            wait_for(|| cqe(&b, 0).is_some()),
            "type {qp_type}: receive on the other function"
        );
        let rxc = cqe(&b, 0).unwrap();
        assert_eq!(
            (rxc[0], rxc[2], rxc[3] >> 1 & 3),
            (40, 0, 2),
            "receive completion"
        );
        assert_eq!(u16::from_le_bytes([rxc[6], rxc[7]]), 100, "length");
        assert_eq!(
            u16::from_le_bytes([rxc[8], rxc[9]]),
            0xffff,
            "b has no AH for a"
        );
        assert_eq!(u16::from_le_bytes([rxc[10], rxc[11]]), 1, "source QP");
        assert_eq!(&rxc[16..32], &gid_a, "source GID in the 32-byte entry");
        assert_eq!(b.ram_read(0x20_0800, 100), payload);
        assert!(wait_for(|| cqe(&a, 0).is_some()), "send completion");
        assert_eq!(cqe(&a, 0).unwrap()[2], 0, "sent");
        // Sends whose outcome an SRD sender learns and a UD sender does
        // not: WQE `n` completes with `srd_status`, or 0 on UD.
        let send_learns = |n: u32, srd_status: u8, what: &str| {
            post_send(&a, lkey_a, ah_a, n);
            assert!(wait_for(|| cqe(&a, n.into()).is_some()), "{what}");
            let expected = if qp_type == cq_l::TYPE_SRD {
                srd_status
            } else {
                0
            };
            assert_eq!(
                cqe(&a, n.into()).unwrap()[2],
                expected,
                "type {qp_type}: {what}"
            );
        };
        // No receive posted: b counts the drop.
        send_learns(1, datapath::status::RNR, "no receive");
        assert!(cqe(&b, 1).is_none());
        let mut stats = Entry::default();
        stats.set_u8(l::get_stats::TYPE, 0);
        let basic = b.ok(opcode::GET_STATS, stats);
        assert_eq!(
            (basic.u64(8 + 24), basic.u64(8 + 32)),
            (1, 1),
            "b: rx packets, drops"
        );
        // Once b is gone its GID reaches nobody.
        drop(b);
        send_learns(2, datapath::status::UNREACH_REMOTE, "peer gone");
    }
}

#[test]
fn sends_beyond_a_pass_budget_complete_in_later_passes() {
    let mut rig = Rig::new();
    let pd = rig.alloc(opcode::ALLOC_PD);
    let uar = rig.alloc(opcode::ALLOC_UAR);
    let cq_ring = 0x30_0000;
    let cq = rig.cq(uar, 256, cq_ring);
    let cqn = rig.ok(opcode::CREATE_CQ, cq).u16(8);
    let qp = rig.qp(pd, uar, cqn);
    let h = rig.ok(opcode::CREATE_QP, qp).u32(cq_l::RESP_HANDLE);
    rig.bring_to_rts(h);
    let ahn = rig.ah(pd, &EfaSettings::default().gid);
    // 100 inline UD sends to the QP itself, one doorbell: more than a
    // pass takes (no receive is posted; a UD sender completes anyway).
    let n = 100u16;
    assert!(n > datapath::PASS_BUDGET);
    for i in 0..n {
        let mut wqe = [0u8; 64];
        wqe[0..2].copy_from_slice(&i.to_le_bytes());
        wqe[2] = 0x80 | 0x20; // meta descriptor, inline SEND
        wqe[3] = 0x04 | 0x08 | 0x10;
        wqe[4..6].copy_from_slice(&1u16.to_le_bytes());
        wqe[6..8].copy_from_slice(&8u16.to_le_bytes());
        wqe[12..14].copy_from_slice(&ahn.to_le_bytes());
        wqe[16..20].copy_from_slice(&0x1111_1111u32.to_le_bytes());
        rig.f
            .llq_memory()
            .unwrap()
            .write_slice(&wqe, 64 * usize::from(i))
            .unwrap();
    }
    ring(&rig, regs::layout::sq_db(0, 0), n.into());
    // 32-byte entries (the rig's CQs).
    let last = cq_ring + 32 * u64::from(n - 1);
    assert!(wait_for(|| rig.ram_read(last, 32)[3] & 1 == 1), "all sends");
    for i in 0..n {
        let c = rig.ram_read(cq_ring + 32 * u64::from(i), 32);
        assert_eq!((u16::from_le_bytes([c[0], c[1]]), c[2]), (i, 0), "in order");
    }
}

/// Sets QP `handle`'s RNR retry count; returns the completion status.
fn set_rnr_retry(rig: &mut Rig, handle: u32, count: u8) -> u8 {
    let mut cmd = modify(handle, l::modify_qp::MASK_RNR_RETRY, 0, 0);
    cmd.set_u8(l::modify_qp::RNR_RETRY, count);
    rig.status(opcode::MODIFY_QP, cmd)
}

#[test]
fn srd_sends_retry_while_no_receive_is_posted() {
    let mut rig = Rig::new();
    let (lkey, ahn) = loopback(&mut rig, cq_l::TYPE_SRD);
    let sender = 0x1_0000;
    assert_eq!(set_rnr_retry(&mut rig, sender, 8), ILLEGAL, "3 bits");
    assert_eq!(set_rnr_retry(&mut rig, sender, 7), 0);
    let q = rig.ok(opcode::QUERY_QP, payload(4, sender));
    assert_eq!(q.u8(8 + 13), 7, "QUERY_QP reports the RNR retry count");
    // For ever: the send waits until a receive is posted, then lands.
    let wqe = send_wqe(lkey, ahn, 0);
    push_wqe(&rig, 0, &wqe);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        rig.ram_read(RING, 32)[3] & 1,
        0,
        "no completion while it waits"
    );
    let mut rx = [0u8; 16];
    rx[0..8].copy_from_slice(&0x1000_0800u64.to_le_bytes());
    rx[10..12].copy_from_slice(&200u16.to_le_bytes());
    rx[12..16].copy_from_slice(&(lkey | 3 << 30).to_le_bytes());
    rig.ram_write(RING + 0x9000, &rx);
    ring(&rig, regs::layout::rq_db(0, 1), 1);
    assert!(wait_for(|| rig.ram_read(RING + 32, 32)[3] & 1 == 1));
    let (rxc, txc) = (rig.ram_read(RING, 32), rig.ram_read(RING + 32, 32));
    assert_eq!((rxc[2], rxc[3] >> 1 & 3), (0, 2), "the receive took it");
    assert_eq!((txc[2], txc[3] >> 1 & 3), (0, 1), "then the send completed");
    // Two retries (1 + 2 ms), then RNR.
    assert_eq!(set_rnr_retry(&mut rig, sender, 2), 0);
    rig.f.llq_memory().unwrap().write_slice(&wqe, 64).unwrap();
    let started = Instant::now();
    ring(&rig, regs::layout::sq_db(0, 0), 2);
    assert!(wait_for(|| rig.ram_read(RING + 64, 32)[3] & 1 == 1));
    assert!(
        started.elapsed() >= Duration::from_millis(3),
        "retried first"
    );
    assert_eq!(rig.ram_read(RING + 64, 32)[2], datapath::status::RNR);
    // A waiting send is flushed when its QP goes to the error state.
    assert_eq!(set_rnr_retry(&mut rig, sender, 7), 0);
    push_wqe(&rig, 2, &wqe);
    std::thread::sleep(Duration::from_millis(20));
    rig.ok(
        opcode::MODIFY_QP,
        modify(sender, l::modify_qp::MASK_STATE, qp_state::ERR, 0),
    );
    assert!(wait_for(|| rig.ram_read(RING + 96, 32)[3] & 1 == 1));
    assert_eq!(rig.ram_read(RING + 96, 32)[2], datapath::status::FLUSHED);
}

/// An RDMA WQE (`op`: 1 read, 2 write) of QP 1 to QP 1 of the AH's GID:
/// `len` bytes between local IOVA `local` and remote IOVA `remote` of
/// `rkey`, request id `n`, with immediate data `imm` if given.
#[allow(clippy::too_many_arguments)]
fn post_rdma(
    rig: &Rig,
    n: u32,
    op: u8,
    lkey: u32,
    local: u64,
    rkey: u32,
    remote: u64,
    len: u32,
    ahn: u16,
    imm: Option<u32>,
) {
    let mut wqe = [0u8; 64];
    wqe[0..2].copy_from_slice(&(n as u16).to_le_bytes());
    wqe[2] = 0x80 | op | if imm.is_some() { 0x10 } else { 0 };
    wqe[3] = 0x04 | 0x08 | 0x10;
    wqe[4..6].copy_from_slice(&1u16.to_le_bytes());
    wqe[6..8].copy_from_slice(&1u16.to_le_bytes());
    wqe[8..12].copy_from_slice(&imm.unwrap_or(0).to_le_bytes());
    wqe[12..14].copy_from_slice(&ahn.to_le_bytes());
    wqe[16..20].copy_from_slice(&0x1111_1111u32.to_le_bytes());
    wqe[32..36].copy_from_slice(&len.to_le_bytes());
    wqe[36..40].copy_from_slice(&rkey.to_le_bytes());
    wqe[40..48].copy_from_slice(&remote.to_le_bytes());
    wqe[48..52].copy_from_slice(&len.to_le_bytes());
    wqe[52..56].copy_from_slice(&lkey.to_le_bytes());
    wqe[56..64].copy_from_slice(&local.to_le_bytes());
    push_wqe(rig, n, &wqe);
}

/// An uplink that takes every message and records it with its token.
#[derive(Default)]
struct RecordingUplink(std::sync::Mutex<Vec<(fabric::Message, u64)>>);

impl fabric::Uplink for RecordingUplink {
    fn submit(&self, _: &[u8; 16], message: &fabric::Message, token: u64) -> bool {
        self.0.lock().unwrap().push((message.clone(), token));
        true
    }
}

#[test]
fn an_srd_send_to_another_card_completes_with_its_verdict() {
    let fabric = Arc::new(fabric::Fabric::new());
    let uplink = Arc::new(RecordingUplink::default());
    assert!(fabric.set_uplink(Arc::clone(&uplink) as Arc<dyn fabric::Uplink>));
    let gid = EfaSettings::derived_from(b"a").gid;
    let mut a = Rig::on_fabric(&fabric, gid);
    let far = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9];
    let (lkey, ah) = endpoint(&mut a, cq_l::TYPE_SRD, far);
    let token = |n: usize| {
        assert!(
            wait_for(|| uplink.0.lock().unwrap().len() > n),
            "message {n} sent"
        );
        uplink.0.lock().unwrap()[n].1
    };
    // A send completes only once the other card's verdict is in.
    post_send(&a, lkey, ah, 0);
    let t0 = token(0);
    assert_ne!(t0, 0, "an SRD send asks for a verdict");
    std::thread::sleep(Duration::from_millis(20));
    assert!(cqe(&a, 0).is_none(), "no completion before the verdict");
    assert!(
        fabric.complete(&gid, t0 + 100, Ok(Vec::new())),
        "a stray token"
    );
    assert!(fabric.complete(&gid, t0, Err(datapath::status::BAD_DEST_QPN)));
    assert!(wait_for(|| cqe(&a, 0).is_some()));
    assert_eq!(cqe(&a, 0).unwrap()[2], datapath::status::BAD_DEST_QPN);
    // A read answered with another length than asked for.
    post_rdma(&a, 1, 1, lkey, 0x1000_1000, 0x77, 0x5000, 300, ah, None);
    let t1 = token(1);
    assert!(fabric.complete(&gid, t1, Ok(vec![1; 299])));
    assert!(wait_for(|| cqe(&a, 1).is_some()));
    assert_eq!(cqe(&a, 1).unwrap()[2], datapath::status::REMOTE_BAD_STATUS);
    assert_eq!(a.ram_read(0x20_1000, 4), [0; 4], "nothing was written");
    // A send that gets no verdict times out.
    post_send(&a, lkey, ah, 2);
    token(2);
    std::thread::sleep(remote::TIMEOUT / 2);
    assert!(cqe(&a, 2).is_none());
    assert!(wait_for(|| cqe(&a, 2).is_some()));
    assert_eq!(cqe(&a, 2).unwrap()[2], datapath::status::UNRESP_REMOTE);
    // The verdict that comes after is dropped; the CQ gets nothing more.
    assert!(fabric.complete(&gid, token(2), Ok(Vec::new())));
    std::thread::sleep(Duration::from_millis(20));
    assert!(cqe(&a, 3).is_none());
    // GET_STATS NETWORK: the transport's work on the function's messages
    // and the send that got no answer.
    let cost = fabric::TransportCost {
        retransmits: 4,
        retransmit_bytes: 5000,
        timeouts: 2,
    };
    fabric.charge(&gid, cost);
    fabric.charge(
        &gid,
        fabric::TransportCost {
            timeouts: 0,
            ..cost
        },
    );
    let mut stats = Entry::default();
    stats.set_u8(l::get_stats::TYPE, 4);
    let net = a.ok(opcode::GET_STATS, stats);
    let values: Vec<u64> = (0..5).map(|i| net.u64(8 + 8 * i)).collect();
    assert_eq!(
        values,
        [10_000, 8, 2, 1, 1],
        "retrans bytes, packets, timeouts, unresponsive, impaired"
    );
}

#[test]
fn rdma_write_and_read_between_functions_obey_the_target_mr() {
    let fabric = Arc::new(fabric::Fabric::new());
    let (gid_a, gid_b) = (
        EfaSettings::derived_from(b"a").gid,
        EfaSettings::derived_from(b"b").gid,
    );
    let mut a = Rig::on_fabric(&fabric, gid_a);
    let mut b = Rig::on_fabric(&fabric, gid_b);
    let (lkey_a, ah) = endpoint(&mut a, cq_l::TYPE_SRD, gid_b);
    let remote = mr_l::ACCESS_LOCAL_WRITE | mr_l::ACCESS_REMOTE_WRITE | mr_l::ACCESS_REMOTE_READ;
    let (rkey, ah_b) = endpoint_with(&mut b, cq_l::TYPE_SRD, gid_a, remote);
    let done = |rig: &Rig, n: u64| {
        assert!(wait_for(|| cqe(rig, n).is_some()), "completion {n}");
        cqe(rig, n).unwrap()
    };
    // A write of 200 bytes across b's page boundary; b sees no completion.
    let payload: Vec<u8> = (0..200u8).collect();
    a.ram_write(0x20_0100, &payload);
    post_rdma(
        &a,
        0,
        2,
        lkey_a,
        0x1000_0100,
        rkey,
        0x1000_0f80,
        200,
        ah,
        None,
    );
    let c = done(&a, 0);
    assert_eq!((c[2], c[3] >> 4 & 7), (0, 2), "write completed as a write");
    let mut got = b.ram_read(0x20_0f80, 0x80);
    got.extend(b.ram_read(0x20_1000, 200 - 0x80));
    assert_eq!(got, payload);
    assert!(cqe(&b, 0).is_none(), "a plain write completes nothing on b");
    // With immediate data it takes a receive, which completes.
    let write_imm = |n| {
        let (local, remote) = (0x1000_0100, 0x1000_0000);
        post_rdma(&a, n, 2, lkey_a, local, rkey, remote, 16, ah, Some(0xfeed));
        done(&a, n.into())[2]
    };
    assert_eq!(write_imm(1), datapath::status::RNR, "no receive posted");
    post_receive(&b, rkey, 0);
    assert_eq!(write_imm(2), 0);
    let r = done(&b, 0);
    assert_eq!(
        (r[0], r[2], r[3] & 0x7e),
        (40, 0, 4 | 8 | 2 << 4),
        "receive, immediate, write"
    );
    assert_eq!(u16::from_le_bytes([r[6], r[7]]), 16);
    assert_eq!(u32::from_le_bytes([r[12], r[13], r[14], r[15]]), 0xfeed);
    // A read of 300 bytes of b into a's second page.
    let source: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    b.ram_write(0x20_0400, &source);
    post_rdma(
        &a,
        3,
        1,
        lkey_a,
        0x1000_1000,
        rkey,
        0x1000_0400,
        300,
        ah,
        None,
    );
    assert_eq!(done(&a, 3)[2], 0);
    assert_eq!(a.ram_read(0x20_1000, 300), source);
    // Bad R_Key, a range past the MR's end, a length the WQE contradicts.
    for (n, rk, at, expected) in [
        (
            4,
            rkey ^ 0x100,
            0x1000_0000,
            datapath::status::REMOTE_BAD_ADDRESS,
        ),
        (5, rkey, 0x1000_1f00, datapath::status::REMOTE_BAD_ADDRESS),
    ] {
        post_rdma(&a, n, 1, lkey_a, 0x1000_0000, rk, at, 0x200, ah, None);
        assert_eq!(done(&a, n.into())[2], expected, "read {n}");
    }
    // a's MR has no remote permissions: b can neither read nor write it.
    for (n, op) in [(0, 1u8), (1, 2)] {
        post_rdma(
            &b,
            n,
            op,
            rkey,
            0x1000_0000,
            lkey_a,
            0x1000_0000,
            64,
            ah_b,
            None,
        );
        assert_eq!(
            done(&b, 1 + u64::from(n))[2],
            datapath::status::REMOTE_BAD_ADDRESS,
            "op {op}"
        );
    }
    let stats = |rig: &mut Rig, kind: u8| {
        let mut cmd = Entry::default();
        cmd.set_u8(l::get_stats::TYPE, kind);
        let r = rig.ok(opcode::GET_STATS, cmd);
        [r.u64(8), r.u64(16), r.u64(24), r.u64(32)]
    };
    assert_eq!(
        stats(&mut a, 3),
        [3, 232, 1, 0],
        "a: write wrs, bytes, errors (RNR), received"
    );
    assert_eq!(
        stats(&mut a, 2),
        [3, 1324, 2, 0],
        "a: read wrs, bytes, errors, responded"
    );
    assert_eq!(stats(&mut b, 2)[3], 300, "b: read response bytes");
    assert_eq!(stats(&mut b, 3)[3], 216, "b: write bytes received");
}

#[test]
fn an_armed_cq_posts_one_completion_event_per_arm() {
    let mut rig = Rig::new();
    let pd = rig.alloc(opcode::ALLOC_PD);
    let uar = rig.alloc(opcode::ALLOC_UAR);
    // The EQ on vector 0 (the rig's eventfd); CQ 0 in interrupt mode on it.
    let eq_ring = 0x30_0000;
    let mut eq = Entry::default();
    eq.set_u16(l::create_eq::DEPTH, 4);
    eq.set_u8(l::create_eq::MSIX_VEC, 1);
    eq.set_u8(l::create_eq::CAPS, 4);
    eq.set_u64(l::create_eq::BA, eq_ring);
    eq.set_u32(l::create_eq::EVENT_BITMASK, 1);
    let eqn = rig.ok(opcode::CREATE_EQ, eq).u16(8);
    let mut cq = rig.cq(uar, 64, RING);
    cq.set_u8(l::create_cq::CAPS_1, l::create_cq::CAPS_1_INTERRUPT_MODE);
    cq.set_u16(l::create_cq::EQN, eqn);
    let cqn = rig.ok(opcode::CREATE_CQ, cq).u16(8);
    let mut qp = rig.qp(pd, uar, cqn);
    qp.set_u32(cq_l::RQ_DEPTH, 0);
    qp.set_u32(cq_l::RQ_RING_SIZE, 0);
    qp.set_u64(cq_l::RQ_BASE, 0);
    let h = rig.ok(opcode::CREATE_QP, qp).u32(cq_l::RESP_HANDLE);
    for state in [qp_state::INIT, qp_state::RTR, qp_state::RTS] {
        rig.ok(
            opcode::MODIFY_QP,
            modify(h, l::modify_qp::MASK_STATE, state, 0),
        );
    }
    let mut ah = Entry::default();
    ah.set_bytes(
        l::create_ah::DEST_ADDR,
        &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9],
    );
    ah.set_u16(l::create_ah::PD, pd);
    let ahn = rig.ok(opcode::CREATE_AH, ah).u16(8);
    rig.wr(regs::EQ_DB, u32::from(eqn) | regs::EQ_DB_ARM);
    let cq_db = regs::layout::cq_db(uar, cqn);
    let send = |rig: &Rig, n: u16| {
        // An inline 4-byte UD send to another GID: completes, dropped.
        let mut wqe = [0u8; 64];
        wqe[2] = 0x80 | 0x20;
        wqe[3] = 0x1c;
        wqe[6] = 4;
        wqe[12..14].copy_from_slice(&ahn.to_le_bytes());
        rig.f
            .llq_memory()
            .unwrap()
            .write_slice(&wqe, 64 * usize::from(n - 1))
            .unwrap();
        ring(rig, regs::layout::sq_db(0, 0), n.into());
    };
    let eqe_phase = |rig: &Rig, i: u64| rig.ram_read(eq_ring + 16 * i, 16)[0] & 1;

    // Not armed: a completion, no event.
    send(&rig, 1);
    assert!(wait_for(|| rig.ram_read(RING, 32)[3] & 1 == 1));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(eqe_phase(&rig, 0), 0, "no event before an arm");
    // Armed (cmd_sn 0) with the completion unconsumed: one event.
    ring(&rig, cq_db, 1 << 31);
    assert!(wait_for(|| eqe_phase(&rig, 0) == 1), "event");
    let eqe = rig.ram_read(eq_ring, 16);
    assert_eq!(
        (eqe[0] >> 1, u16::from_le_bytes([eqe[8], eqe[9]])),
        (0, cqn)
    );
    // The arm is spent: consuming and completing more gives no event ...
    ring(&rig, cq_db, 1 << 31 | 1);
    send(&rig, 2);
    assert!(wait_for(|| rig.ram_read(RING + 32, 32)[3] & 1 == 1));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(eqe_phase(&rig, 1), 0, "one event per arm");
    // ... until the next command sequence number, even without ARM (the
    // driver's poll overwrote it).
    ring(&rig, cq_db, 1 << 29 | 1);
    assert!(wait_for(|| eqe_phase(&rig, 1) == 1), "re-armed event");
}

/// A WQE for [`random_wqes_never_break_the_card`]: either any 64 bytes,
/// or one shaped like libefa's (meta descriptor, an op of 0..8, inline or
/// not) whose fields are random around the values that matter: L_Keys and
/// R_Keys of the rig's MRs or not, IOVAs around theirs, lengths around the
/// limits, QP numbers and AHs that exist or not.
fn any_wqe(keys: [u32; 2]) -> impl Strategy<Value = [u8; 64]> {
    let shaped = (
        any::<[u8; 64]>(),
        (0u8..8, any::<bool>(), any::<bool>(), any::<bool>()),
        (
            0u16..4,
            0u16..4,
            prop_oneof![0u16..4, Just(32), Just(33), any::<u16>()],
        ),
        prop::array::uniform2((
            prop_oneof![
                Just(keys[0]),
                Just(keys[1]),
                Just(keys[0] ^ 0x100),
                any::<u32>()
            ],
            prop_oneof![0x1000_0000u64..0x1000_3000, any::<u64>()],
            prop_oneof![
                0u32..0x2100,
                Just(4096),
                Just(4097),
                Just(1 << 20),
                any::<u32>()
            ],
        )),
    )
        .prop_map(
            |(mut wqe, (op, imm, inline, comp), (dest, ah, length), bufs)| {
                wqe[2] = 0x80 | op | u8::from(imm) << 4 | u8::from(inline) << 5;
                wqe[3] = 0x0c | u8::from(comp) << 4;
                wqe[4..6].copy_from_slice(&dest.to_le_bytes());
                wqe[6..8].copy_from_slice(&length.to_le_bytes());
                wqe[12..14].copy_from_slice(&ah.to_le_bytes());
                wqe[16..20].copy_from_slice(&0x1111_1111u32.to_le_bytes());
                for (i, (key, addr, len)) in bufs.into_iter().enumerate() {
                    let at = 32 + 16 * i;
                    wqe[at..at + 4].copy_from_slice(&len.to_le_bytes());
                    wqe[at + 4..at + 8].copy_from_slice(&key.to_le_bytes());
                    wqe[at + 8..at + 16].copy_from_slice(&addr.to_le_bytes());
                }
                wqe
            },
        );
    prop_oneof![1 => any::<[u8; 64]>(), 4 => shaped]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: crate::testing::fuzz_rounds(48) as u32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever a process writes into its LLQ (sends, RDMA writes and
    /// reads, well-formed or not, to QPs and keys that exist or not), with
    /// receives posted or not and however far it rings the doorbell, the
    /// card neither panics nor touches guest memory outside the rings and
    /// MRs it was given, and keeps serving the QPs.
    #[test]
    fn random_wqes_never_break_the_card(
        wqes in prop::collection::vec(any_wqe([0x003, 0x104]), 1..8),
        receives in 0u32..4,
        tails in prop::collection::vec(prop_oneof![1u16..8, any::<u16>()], 1..3),
    ) {
        let mut rig = Rig::new();
        let (lkey, _) = loopback(&mut rig, cq_l::TYPE_SRD);
        prop_assert_eq!(lkey, 0x003, "the keys any_wqe names");
        // A second MR that takes remote writes and reads: two pages at
        // 0x22_0000 (IOVA 0x1000_2000).
        let mut mr = reg_mr(0, 0x1000_2000, 0x2000, 12, 2);
        mr.set_u64(mr_l::PBL, 0x22_0000);
        mr.set_u64(mr_l::PBL + 8, 0x22_1000);
        mr.set_u8(mr_l::PERMISSIONS, mr_l::ACCESS_LOCAL_WRITE | mr_l::ACCESS_REMOTE_WRITE | mr_l::ACCESS_REMOTE_READ);
        prop_assert_eq!(rig.ok(opcode::REG_MR, mr).u32(8), 0x104);
        for n in 0..receives {
            post_receive(&rig, lkey, n);
        }
        // Guest memory no ring or MR covers.
        let guard = vec![0x5au8; 0x1000];
        for at in [0x21_0000, 0x24_0000, RAM_SIZE - 0x1000] {
            rig.ram_write(at, &guard);
        }
        for (i, wqe) in wqes.iter().enumerate() {
            rig.f.llq_memory().unwrap().write_slice(wqe, 64 * i).unwrap();
        }
        for tail in tails {
            ring(&rig, regs::layout::sq_db(0, 0), tail.into());
            std::thread::sleep(Duration::from_millis(2));
        }
        // The QPs (the rig's handles) and the admin queue still answer.
        for handle in [0x1_0000, 0x2_0001] {
            let state = rig.ok(opcode::QUERY_QP, payload(4, handle)).u32(8);
            prop_assert_eq!(state, qp_state::RTS);
        }
        for at in [0x21_0000, 0x24_0000, RAM_SIZE - 0x1000] {
            prop_assert_eq!(rig.ram_read(at, 0x1000), guard.clone(), "guard at {:#x}", at);
        }
    }
}
