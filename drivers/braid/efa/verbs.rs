// SPDX-License-Identifier: GPL-2.0

//! The EFA function as an RDMA device with EFA's userspace ABI (`efa_verbs.c` is the
//! specification of what each verb answers): the device, port and GID queries, user contexts
//! with libefa's handshake, protection domains, address handles and the hardware counters. Queues
//! and memory regions are not offered yet, so the core refuses those verbs.

#![forbid(unsafe_code)]

use kernel::{
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
};

use super::{device_cap, Attributes, EfaDevice, StatsType};
use crate::efa_abi::{
    cmds_supp_udata, device_caps, ucontext_cmd_caps, AllocPdResp, AllocUcontextCmd,
    AllocUcontextResp, CreateAhResp, ExQueryDeviceResp,
};
use crate::kapi::ib::{self, speed, width, Counter, DeviceAttr, PortAttr, Udata};

/// The kernel's page size, as efa.ko scales `max_mr_pages` by it.
const PAGE_SIZE: u64 = kernel::page::PAGE_SIZE as u64;

/// The RDMA device's data: the device protocol and the error counts efa.ko keeps.
#[pin_data]
pub(crate) struct EfaIb<'bound> {
    #[pin]
    pub(crate) dev: EfaDevice<'bound>,
    alloc_pd_err: Atomic<u64>,
    alloc_ucontext_err: Atomic<u64>,
    create_ah_err: Atomic<u64>,
}

impl<'bound> EfaIb<'bound> {
    /// The RDMA device's data over `dev`.
    pub(crate) fn new(dev: impl PinInit<EfaDevice<'bound>, Error>) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            dev <- dev,
            alloc_pd_err: Atomic::new(0),
            alloc_ucontext_err: Atomic::new(0),
            create_ah_err: Atomic::new(0),
        }? Error)
    }

    fn attributes(&self) -> &Attributes {
        &self.dev.attributes
    }

    /// `alloc_ucontext` without the error count.
    fn try_alloc_context(&self, udata: &mut Udata<'_>) -> Result<Context> {
        let a = self.attributes();
        let cmd: AllocUcontextCmd = udata.read(0)?;
        // The handshake (`efa_user_supp_handshake`): a provider that would ignore a device limit
        // it does not know cannot use the device.
        if a.max_tx_batch != 0 && cmd.supported_caps & ucontext_cmd_caps::TX_BATCH == 0 {
            return Err(EOPNOTSUPP);
        }
        if a.min_sq_depth != 0 && cmd.supported_caps & ucontext_cmd_caps::MIN_SQ_WR == 0 {
            return Err(EOPNOTSUPP);
        }
        let uar = self.dev.alloc_uar()?;
        let resp = AllocUcontextResp {
            cmds_supp_udata_mask: cmds_supp_udata::QUERY_DEVICE | cmds_supp_udata::CREATE_AH,
            sub_cqs_per_cq: a.sub_cqs_per_cq,
            inline_buf_size: a.inline_buf_size as u16,
            inline_buf_size_ex: a.inline_buf_size_ex,
            max_llq_size: a.max_llq_size,
            max_tx_batch: a.max_tx_batch,
            min_sq_wr: a.min_sq_depth,
            ..Default::default()
        };
        if let Err(err) = udata.respond(&resp) {
            let _ = self.dev.dealloc_uar(uar);
            return Err(err);
        }
        Ok(Context { uar })
    }

    /// `alloc_pd` without the error count.
    fn try_alloc_pd(&self, udata: &mut Udata<'_>) -> Result<Pd> {
        udata.require_empty()?;
        let pdn = self.dev.alloc_pd()?;
        let resp = AllocPdResp {
            pdn,
            ..Default::default()
        };
        if let Err(err) = udata.respond(&resp) {
            let _ = self.dev.dealloc_pd(pdn);
            return Err(err);
        }
        Ok(Pd { pdn })
    }

    /// `create_ah` without the error count.
    fn try_create_ah(&self, pd: &Pd, dgid: &[u8; 16], udata: &mut Udata<'_>) -> Result<Ah> {
        udata.require_empty()?;
        let ah = self.dev.create_ah(dgid, pd.pdn)?;
        let resp = CreateAhResp {
            efa_address_handle: ah,
            ..Default::default()
        };
        if let Err(err) = udata.respond(&resp) {
            let _ = self.dev.destroy_ah(ah, pd.pdn);
            return Err(err);
        }
        Ok(Ah { ah, pdn: pd.pdn })
    }
}

/// A user context: the user access region its doorbells will live in.
pub(crate) struct Context {
    uar: u16,
}

/// A protection domain.
pub(crate) struct Pd {
    pdn: u16,
}

/// An address handle: its number, and its PD's (which destroying it names).
pub(crate) struct Ah {
    ah: u16,
    pdn: u16,
}

/// Counts an error of a verb in `counter`.
fn counted<T>(counter: &Atomic<u64>, r: Result<T>) -> Result<T> {
    if r.is_err() {
        counter.fetch_add(1, Relaxed);
    }
    r
}

/// Lane speed and width of a link of `gbps` (`efa_link_gbps_to_speed_and_width`).
fn speed_and_width(gbps: u16) -> (u16, u8) {
    match gbps {
        1600.. => (speed::XDR, width::X8),
        800.. => (speed::NDR, width::X8),
        400.. => (speed::HDR, width::X8),
        200.. => (speed::HDR, width::X4),
        120.. => (speed::FDR10, width::X12),
        100.. => (speed::EDR, width::X4),
        60.. => (speed::DDR, width::X12),
        50.. => (speed::HDR, width::X1),
        40.. => (speed::FDR10, width::X4),
        30.. => (speed::SDR, width::X12),
        _ => (speed::EDR, width::X1),
    }
}

/// Device counters, as efa.ko names them.
const DEVICE_COUNTERS: [Counter; 12] = [
    Counter::new(c"submitted_cmds"),
    Counter::new(c"completed_cmds"),
    Counter::new(c"cmds_err"),
    Counter::new(c"no_completion_cmds"),
    Counter::new(c"keep_alive_rcvd"),
    Counter::new(c"alloc_pd_err"),
    Counter::new(c"create_qp_err"),
    Counter::new(c"create_cq_err"),
    Counter::new(c"reg_mr_err"),
    Counter::new(c"alloc_ucontext_err"),
    Counter::new(c"create_ah_err"),
    Counter::new(c"mmap_err"),
];

/// Port counters, as efa.ko names them, grouped by the GET_STATS type that reads them.
const PORT_COUNTERS: [Counter; 22] = [
    Counter::new(c"tx_bytes"),
    Counter::new(c"tx_pkts"),
    Counter::new(c"rx_bytes"),
    Counter::new(c"rx_pkts"),
    Counter::new(c"rx_drops"),
    Counter::new(c"send_bytes"),
    Counter::new(c"send_wrs"),
    Counter::new(c"recv_bytes"),
    Counter::new(c"recv_wrs"),
    Counter::new(c"rdma_read_wrs"),
    Counter::new(c"rdma_read_bytes"),
    Counter::new(c"rdma_read_wr_err"),
    Counter::new(c"rdma_read_resp_bytes"),
    Counter::new(c"rdma_write_wrs"),
    Counter::new(c"rdma_write_bytes"),
    Counter::new(c"rdma_write_wr_err"),
    Counter::new(c"rdma_write_recv_bytes"),
    Counter::new(c"retrans_bytes"),
    Counter::new(c"retrans_pkts"),
    Counter::new(c"retrans_timeout_events"),
    Counter::new(c"unresponsive_remote_events"),
    Counter::new(c"impaired_remote_conn_events"),
];

/// Where each GET_STATS type's counters go in [`PORT_COUNTERS`]: the type, the first index and
/// how many.
const PORT_GROUPS: [(StatsType, usize, usize); 5] = [
    (StatsType::Basic, 0, 5),
    (StatsType::Messages, 5, 4),
    (StatsType::RdmaRead, 9, 4),
    (StatsType::RdmaWrite, 13, 4),
    (StatsType::Network, 17, 5),
];

impl ib::Operations for EfaIb<'_> {
    type Context = Context;
    type Pd = Pd;
    type Ah = Ah;

    const DEVICE_COUNTERS: &'static [Counter] = &DEVICE_COUNTERS;
    const PORT_COUNTERS: &'static [Counter] = &PORT_COUNTERS;

    fn query_device(dev: &ib::Device<Self>, udata: &mut Udata<'_>) -> Result<DeviceAttr> {
        let this = dev.data();
        let a = this.attributes();
        udata.require_empty()?;
        if udata.out_len() > 0 {
            let mut caps = device_caps::CQ_WITH_SGID | device_caps::CQ_WITH_EXT_MEM;
            for (device, user) in [
                (device_cap::RDMA_READ, device_caps::RDMA_READ),
                (device_cap::RNR_RETRY, device_caps::RNR_RETRY),
                (device_cap::DATA_POLLING_128, device_caps::DATA_POLLING_128),
                (device_cap::RDMA_WRITE, device_caps::RDMA_WRITE),
                (
                    device_cap::UNSOLICITED_WRITE_RECV,
                    device_caps::UNSOLICITED_WRITE_RECV,
                ),
            ] {
                if a.has(device) {
                    caps |= user;
                }
            }
            udata.respond(&ExQueryDeviceResp {
                max_sq_wr: a.max_sq_depth,
                max_rq_wr: a.max_rq_depth,
                max_sq_sge: a.max_sq_sge,
                max_rq_sge: a.max_rq_sge,
                max_rdma_size: a.max_rdma_size,
                device_caps: caps,
                ..Default::default()
            })?;
        }
        Ok(DeviceAttr {
            fw_ver: a.fw_version.into(),
            max_mr_size: u64::from(a.max_mr_pages) * PAGE_SIZE,
            page_size_cap: a.page_size_cap,
            vendor_id: this.dev.vendor,
            vendor_part_id: this.dev.device_id,
            hw_ver: this.dev.subsystem_device,
            max_qp: a.max_qp,
            max_qp_wr: a.max_sq_depth.min(a.max_rq_depth),
            max_send_sge: a.max_sq_sge.into(),
            max_recv_sge: a.max_rq_sge.into(),
            max_sge_rd: a.max_rdma_sge.into(),
            max_cq: a.max_cq,
            max_cqe: a.max_cq_depth,
            max_mr: a.max_mr,
            max_pd: a.max_pd,
            max_ah: a.max_ah,
            max_pkeys: 1,
        })
    }

    fn query_port(dev: &ib::Device<Self>, _port: u32) -> Result<PortAttr> {
        let a = dev.data().attributes();
        let (active_speed, active_width) = speed_and_width(a.max_link_speed_gbps);
        Ok(PortAttr {
            active: true,
            mtu: a.mtu,
            max_msg_sz: a.mtu,
            gid_tbl_len: 1,
            pkey_tbl_len: 1,
            lmc: 1,
            max_vl_num: 1,
            active_speed,
            active_width,
        })
    }

    fn query_gid(dev: &ib::Device<Self>, _port: u32, index: u32) -> Result<[u8; 16]> {
        if index > 0 {
            return Err(EINVAL);
        }
        Ok(dev.data().attributes().gid)
    }

    fn query_pkey(_dev: &ib::Device<Self>, _port: u32, index: u16) -> Result<u16> {
        if index > 0 {
            return Err(EINVAL);
        }
        Ok(0xffff)
    }

    fn alloc_context(dev: &ib::Device<Self>, udata: &mut Udata<'_>) -> Result<Context> {
        let this = dev.data();
        counted(&this.alloc_ucontext_err, this.try_alloc_context(udata))
    }

    fn dealloc_context(dev: &ib::Device<Self>, context: Context) {
        // A failure leaves the region to the device's next reset.
        let _ = dev.data().dev.dealloc_uar(context.uar);
    }

    fn alloc_pd(dev: &ib::Device<Self>, udata: &mut Udata<'_>) -> Result<Pd> {
        let this = dev.data();
        counted(&this.alloc_pd_err, this.try_alloc_pd(udata))
    }

    fn dealloc_pd(dev: &ib::Device<Self>, pd: Pd) {
        let _ = dev.data().dev.dealloc_pd(pd.pdn);
    }

    fn create_ah(
        dev: &ib::Device<Self>,
        pd: &Pd,
        dgid: &[u8; 16],
        udata: &mut Udata<'_>,
    ) -> Result<Ah> {
        let this = dev.data();
        counted(&this.create_ah_err, this.try_create_ah(pd, dgid, udata))
    }

    fn destroy_ah(dev: &ib::Device<Self>, ah: Ah) {
        let _ = dev.data().dev.destroy_ah(ah.ah, ah.pdn);
    }

    fn device_counters(dev: &ib::Device<Self>, values: &mut [u64]) -> Result {
        let this = dev.data();
        let admin = this.dev.admin_stats();
        let counts = [
            admin.submitted,
            admin.completed,
            admin.failed,
            admin.no_completion,
            this.dev.keep_alives(),
            this.alloc_pd_err.load(Relaxed),
            // No queues, regions or mappings yet: none of those verbs can fail here.
            0,
            0,
            0,
            this.alloc_ucontext_err.load(Relaxed),
            this.create_ah_err.load(Relaxed),
            0,
        ];
        for (v, c) in values.iter_mut().zip(counts) {
            *v = c;
        }
        Ok(())
    }

    fn port_counters(dev: &ib::Device<Self>, _port: u32, values: &mut [u64]) -> Result {
        let this = dev.data();
        for (kind, first, n) in PORT_GROUPS {
            if matches!(kind, StatsType::RdmaWrite)
                && !this.attributes().has(device_cap::RDMA_WRITE)
            {
                continue;
            }
            let slot = values.get_mut(first..first + n).ok_or(EINVAL)?;
            this.dev.stats(kind, slot)?;
        }
        Ok(())
    }
}
