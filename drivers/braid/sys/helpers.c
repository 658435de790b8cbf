// SPDX-License-Identifier: GPL-2.0
/* Symbols for the static inline kernel functions and macros braid.ko calls from Rust. Nothing else. */
#include "braid_sys.h"

bool braid_pci_is_pcie(struct pci_dev *pdev)
{
	return pci_is_pcie(pdev);
}

int braid_pci_pcie_type(struct pci_dev *pdev)
{
	return pci_pcie_type(pdev);
}

dma_addr_t braid_dma_map_single(struct device *dev, void *ptr, size_t size,
				enum dma_data_direction dir)
{
	return dma_map_single(dev, ptr, size, dir);
}

void braid_dma_unmap_single(struct device *dev, dma_addr_t addr, size_t size,
			    enum dma_data_direction dir)
{
	dma_unmap_single(dev, addr, size, dir);
}

int braid_dma_mapping_error(struct device *dev, dma_addr_t addr)
{
	return dma_mapping_error(dev, addr);
}

void braid_dma_sync_single_for_cpu(struct device *dev, dma_addr_t addr, size_t size,
				   enum dma_data_direction dir)
{
	dma_sync_single_for_cpu(dev, addr, size, dir);
}

void braid_dma_sync_single_for_device(struct device *dev, dma_addr_t addr, size_t size,
				      enum dma_data_direction dir)
{
	dma_sync_single_for_device(dev, addr, size, dir);
}

void *braid_netdev_priv(const struct net_device *dev)
{
	return netdev_priv(dev);
}

void braid_netdev_set_parent(struct net_device *dev, struct device *parent)
{
	SET_NETDEV_DEV(dev, parent);
}

void braid_eth_hw_addr_set(struct net_device *dev, const u8 *addr)
{
	eth_hw_addr_set(dev, addr);
}

void braid_netdev_allow_live_addr_change(struct net_device *dev)
{
	dev->priv_flags |= IFF_LIVE_ADDR_CHANGE;
}

const char *braid_netdev_parent_name(const struct net_device *dev)
{
	return dev->dev.parent ? dev_name(dev->dev.parent) : "";
}

void braid_netif_tx_wake_all_queues(struct net_device *dev)
{
	netif_tx_wake_all_queues(dev);
}

void braid_netif_tx_stop_queue(struct net_device *dev, unsigned int queue)
{
	netif_tx_stop_queue(netdev_get_tx_queue(dev, queue));
}

void braid_netif_tx_wake_queue(struct net_device *dev, unsigned int queue)
{
	netif_tx_wake_queue(netdev_get_tx_queue(dev, queue));
}

bool braid_netif_tx_queue_stopped(struct net_device *dev, unsigned int queue)
{
	return netif_tx_queue_stopped(netdev_get_tx_queue(dev, queue));
}

void braid_netdev_tx_sent_queue(struct net_device *dev, unsigned int queue, unsigned int bytes)
{
	netdev_tx_sent_queue(netdev_get_tx_queue(dev, queue), bytes);
}

void braid_netdev_tx_completed_queue(struct net_device *dev, unsigned int queue,
				     unsigned int packets, unsigned int bytes)
{
	netdev_tx_completed_queue(netdev_get_tx_queue(dev, queue), packets, bytes);
}

void braid_netdev_tx_reset_queue(struct net_device *dev, unsigned int queue)
{
	netdev_tx_reset_queue(netdev_get_tx_queue(dev, queue));
}

bool braid_netdev_xmit_more(void)
{
	return netdev_xmit_more();
}

void braid_netif_napi_add(struct net_device *dev, struct napi_struct *napi,
			  int (*poll)(struct napi_struct *, int))
{
	netif_napi_add(dev, napi, poll);
}

void braid_netif_napi_del(struct napi_struct *napi)
{
	netif_napi_del(napi);
}

bool braid_napi_schedule(struct napi_struct *napi)
{
	return napi_schedule(napi);
}

void braid_napi_gro_receive(struct napi_struct *napi, struct sk_buff *skb)
{
	napi_gro_receive(napi, skb);
}

void braid_eth_type_trans(struct sk_buff *skb, struct net_device *dev)
{
	skb->protocol = eth_type_trans(skb, dev);
}

unsigned int braid_skb_headlen(const struct sk_buff *skb)
{
	return skb_headlen(skb);
}

unsigned int braid_skb_nr_frags(const struct sk_buff *skb)
{
	return skb_shinfo(skb)->nr_frags;
}

unsigned int braid_skb_frag_size(const struct sk_buff *skb, unsigned int i)
{
	return skb_frag_size(&skb_shinfo(skb)->frags[i]);
}

dma_addr_t braid_skb_frag_dma_map(struct device *dev, const struct sk_buff *skb, unsigned int i)
{
	const skb_frag_t *frag = &skb_shinfo(skb)->frags[i];

	return skb_frag_dma_map(dev, frag, 0, skb_frag_size(frag), DMA_TO_DEVICE);
}

u16 braid_skb_get_queue_mapping(const struct sk_buff *skb)
{
	return skb_get_queue_mapping(skb);
}

void braid_skb_reserve(struct sk_buff *skb, unsigned int len)
{
	skb_reserve(skb, len);
}

void braid_skb_record_rx_queue(struct sk_buff *skb, u16 queue)
{
	skb_record_rx_queue(skb, queue);
}

void braid_skb_set_hash_l4(struct sk_buff *skb, u32 hash)
{
	skb_set_hash(skb, hash, PKT_HASH_TYPE_L4);
}

void braid_skb_set_csum_unnecessary(struct sk_buff *skb)
{
	skb->ip_summed = CHECKSUM_UNNECESSARY;
}

bool braid_skb_csum_partial(const struct sk_buff *skb)
{
	return skb->ip_summed == CHECKSUM_PARTIAL;
}

unsigned int braid_skb_gso_size(const struct sk_buff *skb)
{
	return skb_is_gso(skb) ? skb_shinfo(skb)->gso_size : 0;
}

u16 braid_skb_l3_protocol(struct sk_buff *skb)
{
	return ntohs(vlan_get_protocol(skb));
}

u8 braid_skb_ip_protocol(struct sk_buff *skb)
{
	switch (vlan_get_protocol(skb)) {
	case htons(ETH_P_IP):
		return ip_hdr(skb)->protocol;
	case htons(ETH_P_IPV6):
		return ipv6_hdr(skb)->nexthdr;
	default:
		return 0;
	}
}

void braid_skb_add_rx_frag(struct sk_buff *skb, struct page *page, unsigned int off,
			   unsigned int size, unsigned int truesize)
{
	skb_add_rx_frag(skb, skb_shinfo(skb)->nr_frags, page, off, size, truesize);
}

void braid_dev_kfree_skb_any(struct sk_buff *skb)
{
	dev_kfree_skb_any(skb);
}

void braid_skb_put_data(struct sk_buff *skb, const void *data, unsigned int len)
{
	skb_put_data(skb, data, len);
}

struct page *braid_dev_alloc_page(void)
{
	return dev_alloc_page();
}

void *braid_page_address(struct page *page)
{
	return page_address(page);
}

void braid_put_page(struct page *page)
{
	put_page(page);
}

unsigned int braid_rx_headroom(void)
{
	return NET_SKB_PAD + NET_IP_ALIGN;
}

unsigned int braid_rx_tailroom(void)
{
	return SKB_DATA_ALIGN(sizeof(struct skb_shared_info));
}

unsigned int braid_skb_data_align(unsigned int len)
{
	return SKB_DATA_ALIGN(len);
}

void braid_get_page(struct page *page)
{
	get_page(page);
}

void braid_dev_hold(struct net_device *dev)
{
	dev_hold(dev);
}

void braid_dev_put(struct net_device *dev)
{
	dev_put(dev);
}

unsigned int braid_num_online_cpus(void)
{
	return num_online_cpus();
}

void braid_init_dim_work(struct dim *dim, void (*func)(struct work_struct *))
{
	INIT_WORK(&dim->work, func);
}

void braid_dim_update_sample(u16 event_ctr, u64 packets, u64 bytes, struct dim_sample *s)
{
	dim_update_sample(event_ctr, packets, bytes, s);
}

void braid_init_completion(struct completion *x)
{
	init_completion(x);
}

void braid_init_delayed_work(struct delayed_work *dwork, void (*func)(struct work_struct *))
{
	INIT_DELAYED_WORK(dwork, func);
}

bool braid_schedule_delayed_work(struct delayed_work *dwork, unsigned long delay)
{
	return schedule_delayed_work(dwork, delay);
}

bool braid_mod_delayed_work_now(struct delayed_work *dwork)
{
	return mod_delayed_work(system_wq, dwork, 0);
}

void braid_ib_device_set_parent(struct ib_device *ibdev, struct device *parent)
{
	ibdev->dev.parent = parent;
}

struct ib_udata *braid_attrs_udata(struct uverbs_attr_bundle *attrs)
{
	return &attrs->driver_udata;
}

struct ib_ucontext *braid_udata_context(struct ib_udata *udata)
{
	return udata ? container_of(udata, struct uverbs_attr_bundle, driver_udata)->context : NULL;
}

u64 braid_rdma_user_mmap_offset(const struct rdma_user_mmap_entry *entry)
{
	return rdma_user_mmap_get_offset(entry);
}

int braid_rdma_user_mmap_io(struct ib_ucontext *ucontext, struct vm_area_struct *vma,
			    unsigned long pfn, unsigned long size, bool wc,
			    struct rdma_user_mmap_entry *entry)
{
	pgprot_t prot = wc ? pgprot_writecombine(vma->vm_page_prot) :
			     pgprot_noncached(vma->vm_page_prot);

	return rdma_user_mmap_io(ucontext, vma, pfn, size, prot, entry);
}

int braid_vm_insert_linear(struct vm_area_struct *vma, void *cpu, size_t len)
{
	unsigned long va;
	int err;

	if (vma->vm_end - vma->vm_start > len)
		return -EINVAL;
	for (va = vma->vm_start; va < vma->vm_end; va += PAGE_SIZE, cpu += PAGE_SIZE) {
		err = vm_insert_page(vma, va, virt_to_page(cpu));
		if (err)
			return err;
	}
	return 0;
}

void *braid_alloc_pages_exact(size_t size, gfp_t gfp)
{
	return alloc_pages_exact(size, gfp);
}

size_t braid_umem_dma_blocks(struct ib_umem *umem, unsigned long pgsz, u64 *out, size_t max)
{
	struct ib_block_iter biter;
	size_t n = 0;

	rdma_umem_for_each_dma_block(umem, &biter, pgsz) {
		if (n < max)
			out[n] = rdma_block_iter_dma_address(&biter);
		n++;
	}
	return n;
}
