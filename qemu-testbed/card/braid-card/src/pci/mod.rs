//! PCI function building blocks: configuration space, capabilities and
//! MSI-X.

pub mod capability;
pub mod config;
pub mod msix;
pub mod regs;

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A PCI vendor/device ID pair, written `VVVV:DDDD` in hexadecimal (the
/// `lspci -n` notation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PciId {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
}

impl PciId {
    /// The ID `vendor:device`.
    pub const fn new(vendor: u16, device: u16) -> Self {
        Self { vendor, device }
    }
}

impl fmt::Display for PciId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.device)
    }
}

/// A string that is not a `VVVV:DDDD` PCI ID.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid PCI ID '{0}': expected VVVV:DDDD, two 4-digit hexadecimal numbers")]
pub struct ParsePciIdError(String);

impl FromStr for PciId {
    type Err = ParsePciIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || ParsePciIdError(s.to_owned());
        let parse = |part: &str| {
            if part.len() == 4 && part.bytes().all(|b| b.is_ascii_hexdigit()) {
                u16::from_str_radix(part, 16).map_err(|_| error())
            } else {
                Err(error())
            }
        };
        let (vendor, device) = s.split_once(':').ok_or_else(error)?;
        Ok(Self {
            vendor: parse(vendor)?,
            device: parse(device)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_id_round_trips() {
        let id: PciId = "1d0f:EC20".parse().unwrap();
        assert_eq!(id, PciId::new(0x1d0f, 0xec20));
        assert_eq!(id.to_string(), "1d0f:ec20");
    }

    #[test]
    fn malformed_pci_ids_are_rejected() {
        for bad in [
            "",
            "1d0f",
            "1d0f:",
            ":ec20",
            "1d0f:ec2",
            "1d0f:ec200",
            "1d0g:ec20",
            "+d0f:ec20",
            "1d0f:ec20:0",
        ] {
            assert!(bad.parse::<PciId>().is_err(), "{bad:?} parsed");
        }
    }
}
