/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What braid.ko's bindings are generated from: the kernel headers it calls into and the C helpers
 * (helpers.c) that give Rust a real symbol for static inline kernel functions and macros.
 */
#ifndef BRAID_SYS_H
#define BRAID_SYS_H

#include <linux/dim.h>
#include <linux/dma-mapping.h>
#include <linux/etherdevice.h>
#include <linux/if_vlan.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/ethtool.h>
#include <linux/netdevice.h>
#include <linux/pci.h>
#include <linux/rtnetlink.h>
#include <linux/skbuff.h>
#include <linux/workqueue.h>
#include <net/net_namespace.h>
#include <rdma/ib_verbs.h>
#include <rdma/uverbs_ioctl.h>
#include <rdma/ib_umem.h>
#include <rdma/iter.h>

/* PCI */

/* pci_is_pcie(): whether the function has a PCI Express capability. */
bool braid_pci_is_pcie(struct pci_dev *pdev);
/* pci_pcie_type(): the PCI Express device/port type (PCI_EXP_TYPE_*). */
int braid_pci_pcie_type(struct pci_dev *pdev);

/* DMA (streaming mappings) */

dma_addr_t braid_dma_map_single(struct device *dev, void *ptr, size_t size,
				enum dma_data_direction dir);
void braid_dma_unmap_single(struct device *dev, dma_addr_t addr, size_t size,
			    enum dma_data_direction dir);
int braid_dma_mapping_error(struct device *dev, dma_addr_t addr);
void braid_dma_sync_single_for_cpu(struct device *dev, dma_addr_t addr, size_t size,
				   enum dma_data_direction dir);
void braid_dma_sync_single_for_device(struct device *dev, dma_addr_t addr, size_t size,
				      enum dma_data_direction dir);

/* net_device */

void *braid_netdev_priv(const struct net_device *dev);
/* SET_NETDEV_DEV(). */
void braid_netdev_set_parent(struct net_device *dev, struct device *parent);
void braid_eth_hw_addr_set(struct net_device *dev, const u8 *addr);
/* dev->priv_flags |= IFF_LIVE_ADDR_CHANGE (a bit field of an enum). */
void braid_netdev_allow_live_addr_change(struct net_device *dev);
/* dev_name() of the device's parent (its bus address). */
const char *braid_netdev_parent_name(const struct net_device *dev);
void braid_netif_tx_wake_all_queues(struct net_device *dev);
void braid_netif_tx_stop_queue(struct net_device *dev, unsigned int queue);
void braid_netif_tx_wake_queue(struct net_device *dev, unsigned int queue);
bool braid_netif_tx_queue_stopped(struct net_device *dev, unsigned int queue);
void braid_netdev_tx_sent_queue(struct net_device *dev, unsigned int queue, unsigned int bytes);
void braid_netdev_tx_completed_queue(struct net_device *dev, unsigned int queue,
				     unsigned int packets, unsigned int bytes);
void braid_netdev_tx_reset_queue(struct net_device *dev, unsigned int queue);
bool braid_netdev_xmit_more(void);

/* NAPI */

void braid_netif_napi_add(struct net_device *dev, struct napi_struct *napi,
			  int (*poll)(struct napi_struct *, int));
void braid_netif_napi_del(struct napi_struct *napi);
bool braid_napi_schedule(struct napi_struct *napi);
void braid_napi_gro_receive(struct napi_struct *napi, struct sk_buff *skb);

/* sk_buff */

unsigned int braid_skb_headlen(const struct sk_buff *skb);
unsigned int braid_skb_nr_frags(const struct sk_buff *skb);
unsigned int braid_skb_frag_size(const struct sk_buff *skb, unsigned int i);
dma_addr_t braid_skb_frag_dma_map(struct device *dev, const struct sk_buff *skb, unsigned int i);
u16 braid_skb_get_queue_mapping(const struct sk_buff *skb);
void braid_skb_reserve(struct sk_buff *skb, unsigned int len);
void braid_skb_record_rx_queue(struct sk_buff *skb, u16 queue);
void braid_skb_set_hash_l4(struct sk_buff *skb, u32 hash);
void braid_skb_set_csum_unnecessary(struct sk_buff *skb);
bool braid_skb_csum_partial(const struct sk_buff *skb);
unsigned int braid_skb_gso_size(const struct sk_buff *skb);
/* The packet's network protocol (ETH_P_*, host order; through a VLAN tag). */
u16 braid_skb_l3_protocol(struct sk_buff *skb);
/* The transport protocol of an IPv4 or IPv6 packet (IPPROTO_*: ip_hdr()->protocol,
 * ipv6_hdr()->nexthdr); 0 for anything else. */
u8 braid_skb_ip_protocol(struct sk_buff *skb);
void braid_skb_add_rx_frag(struct sk_buff *skb, struct page *page, unsigned int off,
			   unsigned int size, unsigned int truesize);
void braid_dev_kfree_skb_any(struct sk_buff *skb);
/* skb_put_data() */
void braid_skb_put_data(struct sk_buff *skb, const void *data, unsigned int len);
/* skb->protocol = eth_type_trans(skb, dev). */
void braid_eth_type_trans(struct sk_buff *skb, struct net_device *dev);

/* Pages for receive buffers */

struct page *braid_dev_alloc_page(void);
void *braid_page_address(struct page *page);
void braid_put_page(struct page *page);
/* Room build_skb() needs around a receive buffer: NET_SKB_PAD + NET_IP_ALIGN before it, the
 * aligned skb_shared_info after it. */
unsigned int braid_rx_headroom(void);
unsigned int braid_rx_tailroom(void);
/* SKB_DATA_ALIGN(): a length rounded up to the cache line, as build_skb lays out a buffer. */
unsigned int braid_skb_data_align(unsigned int len);
void braid_get_page(struct page *page);

/* Deferred work */

/* INIT_DELAYED_WORK(). */
void braid_init_delayed_work(struct delayed_work *dwork, void (*func)(struct work_struct *));
/* INIT_WORK() on a struct dim's work item. */
void braid_init_dim_work(struct dim *dim, void (*func)(struct work_struct *));
/* dim_update_sample(). */
void braid_dim_update_sample(u16 event_ctr, u64 packets, u64 bytes, struct dim_sample *s);
/* init_completion(): its wait queue's lock class is static in the macro. */
void braid_init_completion(struct completion *x);
/* schedule_delayed_work(): on the system workqueue. */
bool braid_schedule_delayed_work(struct delayed_work *dwork, unsigned long delay);
/* mod_delayed_work() on the system workqueue with no delay: run a queued or idle work now. */
bool braid_mod_delayed_work_now(struct delayed_work *dwork);

/* CPUs */

unsigned int braid_num_online_cpus(void);

/* net_device references */

void braid_dev_hold(struct net_device *dev);
void braid_dev_put(struct net_device *dev);

/* RDMA devices */

/* The device's parent, as efa.ko sets ibdev.dev.parent. */
void braid_ib_device_set_parent(struct ib_device *ibdev, struct device *parent);
/* A verb's driver udata, and the user context it runs in (rdma_udata_to_drv_context()). */
struct ib_udata *braid_attrs_udata(struct uverbs_attr_bundle *attrs);
struct ib_ucontext *braid_udata_context(struct ib_udata *udata);
/* rdma_user_mmap_get_offset(). */
u64 braid_rdma_user_mmap_offset(const struct rdma_user_mmap_entry *entry);
/* rdma_user_mmap_io() of device memory at pfn over the whole vma, uncached or write-combining. */
int braid_rdma_user_mmap_io(struct ib_ucontext *ucontext, struct vm_area_struct *vma,
			    unsigned long pfn, unsigned long size, bool wc,
			    struct rdma_user_mmap_entry *entry);
/* vm_insert_page() of each page of a linearly mapped kernel buffer of len bytes over the vma,
 * which must not be longer; -EINVAL if it is. */
int braid_vm_insert_linear(struct vm_area_struct *vma, void *cpu, size_t len);
/* alloc_pages_exact() (a macro over the allocation profiling hooks). */
void *braid_alloc_pages_exact(size_t size, gfp_t gfp);
/* rdma_umem_for_each_dma_block(): writes the first max DMA blocks of pgsz bytes to out, returns
 * how many there are in all (ib_umem_num_dma_blocks()). */
size_t braid_umem_dma_blocks(struct ib_umem *umem, unsigned long pgsz, u64 *out, size_t max);

#endif /* BRAID_SYS_H */
