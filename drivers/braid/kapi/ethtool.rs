// SPDX-License-Identifier: GPL-2.0

//! ethtool: driver information, link state and the driver's named counters (`ethtool -i`, the
//! link line of `ethtool`, `ethtool -S`), ring sizes, channels, interrupt moderation and
//! receive-side scaling (`-g/-G`, `-l/-L`, `-c/-C`, `-x/-X`).

use core::fmt::{self, Write};

use kernel::{error::from_result, ffi, prelude::*};

use super::netdev::{Device, Operations};
use crate::sys;

/// Bytes of one counter name (`ETH_GSTRING_LEN`).
const NAME_LEN: usize = sys::ETH_GSTRING_LEN as usize;

/// What a pass over the driver's counters collects.
enum Pass<'a> {
    Count(usize),
    Names(&'a mut [u8]),
    Values(&'a mut [u64]),
}

/// The sink a driver reports its counters to, in the same order on every call
/// ([`Operations::ethtool_stats`]).
pub(crate) struct Stats<'a> {
    pass: Pass<'a>,
    index: usize,
}

/// Formats into a fixed, NUL-padded name slot, cutting what does not fit.
struct NameSlot<'a>(&'a mut [u8], usize);

impl Write for NameSlot<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            // Keep the last byte for the terminating NUL.
            if self.1 + 1 < self.0.len() {
                self.0[self.1] = b;
                self.1 += 1;
            }
        }
        Ok(())
    }
}

impl Stats<'_> {
    /// Reports the counter `name` (at most 31 bytes are kept), whose value `value` reads.
    pub(crate) fn stat(&mut self, name: fmt::Arguments<'_>, value: impl FnOnce() -> u64) {
        let i = self.index;
        self.index += 1;
        match &mut self.pass {
            Pass::Count(n) => *n += 1,
            Pass::Names(buf) => {
                if let Some(slot) = buf.get_mut(i * NAME_LEN..(i + 1) * NAME_LEN) {
                    slot.fill(0);
                    let _ = NameSlot(slot, 0).write_fmt(name);
                }
            }
            Pass::Values(buf) => {
                if let Some(v) = buf.get_mut(i) {
                    *v = value();
                }
            }
        }
    }
}

/// Ring sizes (`ethtool -g/-G`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rings {
    /// Largest receive ring.
    pub(crate) rx_max: u32,
    /// Largest transmit ring.
    pub(crate) tx_max: u32,
    /// Receive ring size.
    pub(crate) rx: u32,
    /// Transmit ring size.
    pub(crate) tx: u32,
}

/// Combined channels, one transmit and one receive queue each (`ethtool -l/-L`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Channels {
    /// Most channels.
    pub(crate) max: u32,
    /// Channels in use.
    pub(crate) count: u32,
}

/// Interrupt moderation (`ethtool -c/-C`: rx-usecs and tx-usecs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Coalesce {
    /// Whether the receive delay adapts to the traffic (DIM); `rx_usecs` is kept for when not.
    pub(crate) adaptive_rx: bool,
    /// Receive interrupt delay in µs.
    pub(crate) rx_usecs: u32,
    /// Transmit interrupt delay in µs.
    pub(crate) tx_usecs: u32,
}

/// Receive-side scaling sizes (`ethtool -x/-X`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RssSizes {
    /// Entries of the indirection table.
    pub(crate) table: u32,
    /// Bytes of the Toeplitz key.
    pub(crate) key: u32,
}

/// `ETH_RSS_HASH_NO_CHANGE` and `ETH_RSS_HASH_TOP` (Toeplitz, the only hash function offered).
const RSS_HASH_NO_CHANGE: u8 = 0;
const RSS_HASH_TOP: u8 = 1 << 0;

/// `ETHTOOL_COALESCE_RX_USECS | ETHTOOL_COALESCE_TX_USECS | ETHTOOL_COALESCE_USE_ADAPTIVE_RX`:
/// the moderation parameters a device with [`Coalesce`] takes (ethtool refuses the others before
/// the driver sees them).
const COALESCE_PARAMS: u32 = (1 << 0) | (1 << 4) | (1 << 9);

/// The ethtool callbacks of a device whose driver data is `T`.
pub(crate) fn ops<T: Operations>() -> sys::ethtool_ops {
    sys::ethtool_ops {
        supported_coalesce_params: COALESCE_PARAMS,
        get_drvinfo: Some(get_drvinfo_callback::<T>),
        get_link: Some(sys::ethtool_op_get_link),
        get_sset_count: Some(get_sset_count_callback::<T>),
        get_strings: Some(get_strings_callback::<T>),
        get_ethtool_stats: Some(get_ethtool_stats_callback::<T>),
        get_ringparam: Some(get_ringparam_callback::<T>),
        set_ringparam: Some(set_ringparam_callback::<T>),
        get_channels: Some(get_channels_callback::<T>),
        set_channels: Some(set_channels_callback::<T>),
        get_coalesce: Some(get_coalesce_callback::<T>),
        set_coalesce: Some(set_coalesce_callback::<T>),
        get_rx_ring_count: Some(get_rx_ring_count_callback::<T>),
        get_rxfh_indir_size: Some(get_rxfh_indir_size_callback::<T>),
        get_rxfh_key_size: Some(get_rxfh_key_size_callback::<T>),
        get_rxfh: Some(get_rxfh_callback::<T>),
        set_rxfh: Some(set_rxfh_callback::<T>),
        ..Default::default()
    }
}

/// # Safety
///
/// Called by ethtool (under the RTNL lock) with a device of `T` and a valid `ring`.
unsafe extern "C" fn get_ringparam_callback<T: Operations>(
    dev: *mut sys::net_device,
    ring: *mut sys::ethtool_ringparam,
    _kring: *mut sys::kernel_ethtool_ringparam,
    _extack: *mut sys::netlink_ext_ack,
) {
    // SAFETY: the caller guarantees a live device of `T` and a valid, exclusive `ring`.
    let (dev, ring) = unsafe { (Device::<T>::from_raw(dev), &mut *ring) };
    if let Some(r) = T::rings(dev) {
        ring.rx_max_pending = r.rx_max;
        ring.tx_max_pending = r.tx_max;
        ring.rx_pending = r.rx;
        ring.tx_pending = r.tx;
    }
}

/// # Safety
///
/// As for [`get_ringparam_callback`].
unsafe extern "C" fn set_ringparam_callback<T: Operations>(
    dev: *mut sys::net_device,
    ring: *mut sys::ethtool_ringparam,
    _kring: *mut sys::kernel_ethtool_ringparam,
    _extack: *mut sys::netlink_ext_ack,
) -> i32 {
    // SAFETY: as for `get_ringparam_callback`.
    let (dev, ring) = unsafe { (Device::<T>::from_raw(dev), &*ring) };
    if ring.rx_mini_pending != 0 || ring.rx_jumbo_pending != 0 {
        return EINVAL.to_errno();
    }
    from_result(|| T::set_rings(dev, ring.rx_pending, ring.tx_pending).map(|()| 0))
}

/// # Safety
///
/// Called by ethtool (under the RTNL lock) with a device of `T` and a valid `ch`.
unsafe extern "C" fn get_channels_callback<T: Operations>(
    dev: *mut sys::net_device,
    ch: *mut sys::ethtool_channels,
) {
    // SAFETY: the caller guarantees a live device of `T` and a valid, exclusive `ch`.
    let (dev, ch) = unsafe { (Device::<T>::from_raw(dev), &mut *ch) };
    if let Some(c) = T::channels(dev) {
        ch.max_combined = c.max;
        ch.combined_count = c.count;
    }
}

/// # Safety
///
/// As for [`get_channels_callback`].
unsafe extern "C" fn set_channels_callback<T: Operations>(
    dev: *mut sys::net_device,
    ch: *mut sys::ethtool_channels,
) -> i32 {
    // SAFETY: as for `get_channels_callback`.
    let (dev, ch) = unsafe { (Device::<T>::from_raw(dev), &*ch) };
    if ch.rx_count != 0 || ch.tx_count != 0 || ch.other_count != 0 || ch.combined_count == 0 {
        return EINVAL.to_errno();
    }
    from_result(|| T::set_channels(dev, ch.combined_count).map(|()| 0))
}

/// # Safety
///
/// Called by ethtool (under the RTNL lock) with a device of `T` and a valid `ec`.
unsafe extern "C" fn get_coalesce_callback<T: Operations>(
    dev: *mut sys::net_device,
    ec: *mut sys::ethtool_coalesce,
    _kec: *mut sys::kernel_ethtool_coalesce,
    _extack: *mut sys::netlink_ext_ack,
) -> i32 {
    // SAFETY: the caller guarantees a live device of `T` and a valid, exclusive `ec`.
    let (dev, ec) = unsafe { (Device::<T>::from_raw(dev), &mut *ec) };
    match T::coalesce(dev) {
        Some(c) => {
            ec.use_adaptive_rx_coalesce = c.adaptive_rx.into();
            ec.rx_coalesce_usecs = c.rx_usecs;
            ec.tx_coalesce_usecs = c.tx_usecs;
            0
        }
        None => EOPNOTSUPP.to_errno(),
    }
}

/// # Safety
///
/// As for [`get_coalesce_callback`].
unsafe extern "C" fn set_coalesce_callback<T: Operations>(
    dev: *mut sys::net_device,
    ec: *mut sys::ethtool_coalesce,
    _kec: *mut sys::kernel_ethtool_coalesce,
    _extack: *mut sys::netlink_ext_ack,
) -> i32 {
    // SAFETY: as for `get_coalesce_callback`.
    let (dev, ec) = unsafe { (Device::<T>::from_raw(dev), &*ec) };
    let c = Coalesce {
        adaptive_rx: ec.use_adaptive_rx_coalesce != 0,
        rx_usecs: ec.rx_coalesce_usecs,
        tx_usecs: ec.tx_coalesce_usecs,
    };
    from_result(|| T::set_coalesce(dev, c).map(|()| 0))
}

/// # Safety
///
/// Called by ethtool with a live device of `T`.
unsafe extern "C" fn get_rx_ring_count_callback<T: Operations>(dev: *mut sys::net_device) -> u32 {
    // SAFETY: the caller guarantees a live device of `T`.
    let dev = unsafe { Device::<T>::from_raw(dev) };
    T::channels(dev).map_or(0, |c| c.count)
}

/// # Safety
///
/// As for [`get_rx_ring_count_callback`].
unsafe extern "C" fn get_rxfh_indir_size_callback<T: Operations>(dev: *mut sys::net_device) -> u32 {
    // SAFETY: the caller guarantees a live device of `T`.
    let dev = unsafe { Device::<T>::from_raw(dev) };
    T::rss_sizes(dev).map_or(0, |s| s.table)
}

/// # Safety
///
/// As for [`get_rx_ring_count_callback`].
unsafe extern "C" fn get_rxfh_key_size_callback<T: Operations>(dev: *mut sys::net_device) -> u32 {
    // SAFETY: the caller guarantees a live device of `T`.
    let dev = unsafe { Device::<T>::from_raw(dev) };
    T::rss_sizes(dev).map_or(0, |s| s.key)
}

/// The table and key buffers of `p`, those it has, at most the sizes the driver reports.
///
/// # Safety
///
/// `p.indir` (`p.key`) is null or valid for `p.indir_size` (`p.key_size`) elements, exclusively,
/// for `'a`.
unsafe fn rxfh_buffers<'a>(
    p: &sys::ethtool_rxfh_param,
    sizes: RssSizes,
) -> (Option<&'a mut [u32]>, Option<&'a mut [u8]>) {
    let table = p.indir_size.min(sizes.table) as usize;
    let key = p.key_size.min(sizes.key) as usize;
    // SAFETY: by the function's requirements; the lengths are at most the buffers' sizes.
    unsafe {
        (
            (!p.indir.is_null()).then(|| core::slice::from_raw_parts_mut(p.indir, table)),
            (!p.key.is_null()).then(|| core::slice::from_raw_parts_mut(p.key, key)),
        )
    }
}

/// # Safety
///
/// Called by ethtool (under the RTNL lock) with a live device of `T` and a valid `p` whose
/// buffers, where not null, hold `indir_size` entries and `key_size` bytes.
unsafe extern "C" fn get_rxfh_callback<T: Operations>(
    dev: *mut sys::net_device,
    p: *mut sys::ethtool_rxfh_param,
) -> i32 {
    // SAFETY: the caller guarantees a live device of `T` and a valid, exclusive `p`.
    let (dev, p) = unsafe { (Device::<T>::from_raw(dev), &mut *p) };
    let Some(sizes) = T::rss_sizes(dev) else {
        return EOPNOTSUPP.to_errno();
    };
    p.hfunc = RSS_HASH_TOP;
    // SAFETY: the caller guarantees the buffers.
    let (table, key) = unsafe { rxfh_buffers(p, sizes) };
    from_result(|| T::rss(dev, table, key).map(|()| 0))
}

/// # Safety
///
/// As for [`get_rxfh_callback`].
unsafe extern "C" fn set_rxfh_callback<T: Operations>(
    dev: *mut sys::net_device,
    p: *mut sys::ethtool_rxfh_param,
    _extack: *mut sys::netlink_ext_ack,
) -> i32 {
    // SAFETY: the caller guarantees a live device of `T` and a valid `p`.
    let (dev, p) = unsafe { (Device::<T>::from_raw(dev), &*p) };
    let Some(sizes) = T::rss_sizes(dev) else {
        return EOPNOTSUPP.to_errno();
    };
    if !matches!(p.hfunc, RSS_HASH_NO_CHANGE | RSS_HASH_TOP) || p.rss_context != 0 {
        return EOPNOTSUPP.to_errno();
    }
    if (!p.indir.is_null() && p.indir_size != sizes.table)
        || (!p.key.is_null() && p.key_size != sizes.key)
    {
        return EINVAL.to_errno();
    }
    // SAFETY: the caller guarantees the buffers; they are only read.
    let (table, key) = unsafe { rxfh_buffers(p, sizes) };
    from_result(|| T::set_rss(dev, table.map(|t| &*t), key.map(|k| &*k)).map(|()| 0))
}

/// How many counters the driver reports.
fn count<T: Operations>(dev: &Device<T>) -> usize {
    let mut stats = Stats {
        pass: Pass::Count(0),
        index: 0,
    };
    T::ethtool_stats(dev, &mut stats);
    match stats.pass {
        Pass::Count(n) => n,
        _ => 0,
    }
}

/// Copies `s` into the fixed C string `dst`, cut to fit with its NUL.
fn copy_name(dst: &mut [ffi::c_char], s: &[u8]) {
    let last = dst.len().saturating_sub(1);
    for (i, d) in dst.iter_mut().enumerate() {
        *d = if i < last {
            s.get(i).copied().unwrap_or(0) as ffi::c_char
        } else {
            0
        };
    }
}

/// # Safety
///
/// Called by ethtool with a device of `T` and a valid `info`.
unsafe extern "C" fn get_drvinfo_callback<T: Operations>(
    dev: *mut sys::net_device,
    info: *mut sys::ethtool_drvinfo,
) {
    // SAFETY: the caller guarantees a live device of `T` and a valid, exclusive `info`.
    let (dev, info) = unsafe { (Device::<T>::from_raw(dev), &mut *info) };
    copy_name(&mut info.driver, T::DRIVER_NAME.to_bytes());
    // SAFETY: the device is live; the helper returns its parent's name, a C string that lives as
    // long as the parent, which outlives the call.
    let bus = unsafe { CStr::from_char_ptr(sys::braid_netdev_parent_name(dev.as_raw())) };
    copy_name(&mut info.bus_info, bus.to_bytes());
}

/// # Safety
///
/// Called by ethtool with a device of `T`.
unsafe extern "C" fn get_sset_count_callback<T: Operations>(
    dev: *mut sys::net_device,
    sset: i32,
) -> i32 {
    if sset != sys::ethtool_stringset_ETH_SS_STATS as i32 {
        return EOPNOTSUPP.to_errno();
    }
    // SAFETY: the caller guarantees a live device of `T`.
    let dev = unsafe { Device::<T>::from_raw(dev) };
    count(dev).try_into().unwrap_or(0)
}

/// # Safety
///
/// Called by ethtool with a device of `T` and room for as many names as `get_sset_count` said.
unsafe extern "C" fn get_strings_callback<T: Operations>(
    dev: *mut sys::net_device,
    sset: u32,
    data: *mut u8,
) {
    if sset != sys::ethtool_stringset_ETH_SS_STATS {
        return;
    }
    // SAFETY: the caller guarantees a live device of `T`.
    let dev = unsafe { Device::<T>::from_raw(dev) };
    let n = count(dev);
    // SAFETY: ethtool sized `data` for `n` names of `ETH_GSTRING_LEN` bytes (the count the
    // driver reports does not change while the device lives).
    let names = unsafe { core::slice::from_raw_parts_mut(data, n * NAME_LEN) };
    T::ethtool_stats(
        dev,
        &mut Stats {
            pass: Pass::Names(names),
            index: 0,
        },
    );
}

/// # Safety
///
/// Called by ethtool with a device of `T` and room for as many values as `get_sset_count` said.
unsafe extern "C" fn get_ethtool_stats_callback<T: Operations>(
    dev: *mut sys::net_device,
    _stats: *mut sys::ethtool_stats,
    data: *mut u64,
) {
    // SAFETY: the caller guarantees a live device of `T`.
    let dev = unsafe { Device::<T>::from_raw(dev) };
    let n = count(dev);
    // SAFETY: ethtool sized `data` for the count the driver reports.
    let values = unsafe { core::slice::from_raw_parts_mut(data, n) };
    T::ethtool_stats(
        dev,
        &mut Stats {
            pass: Pass::Values(values),
            index: 0,
        },
    );
}
