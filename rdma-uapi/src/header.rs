//! The C header braid publishes for userspace, written from [`crate::efa`]: the same structures
//! and constants as EFA's `efa-abi.h`, under an include guard of braid's own.

use core::fmt::{self, Write};

use crate::efa::{Layout, CONSTANTS, STRUCTS, UVERBS_ABI_VERSION};

/// Where the header is committed, relative to the crate.
pub const EFA_HEADER_PATH: &str = "include/rdma/braid-efa-abi.h";

/// Writes the header of [`crate::efa`].
pub fn write_efa(out: &mut impl Write) -> fmt::Result {
    writeln!(
        out,
        "/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR MIT) */"
    )?;
    writeln!(out, "/*")?;
    writeln!(
        out,
        " * The userspace verbs ABI of braid.ko's RDMA provider: EFA's, version 1, so that libefa"
    )?;
    writeln!(
        out,
        " * binds to it (layout as include/uapi/rdma/efa-abi.h). Written from rdma-uapi/src/efa.rs"
    )?;
    writeln!(
        out,
        " * by its tests (BRAID_UAPI_WRITE=1 cargo test -p rdma-uapi); do not edit."
    )?;
    writeln!(out, " */")?;
    writeln!(out)?;
    writeln!(out, "#ifndef BRAID_EFA_ABI_H")?;
    writeln!(out, "#define BRAID_EFA_ABI_H")?;
    writeln!(out)?;
    writeln!(out, "#include <linux/types.h>")?;
    writeln!(out)?;
    writeln!(out, "#define EFA_UVERBS_ABI_VERSION {UVERBS_ABI_VERSION}")?;
    writeln!(out)?;
    writeln!(out, "enum {{")?;
    for (name, value) in CONSTANTS {
        writeln!(out, "\t{name} = {value:#x},")?;
    }
    writeln!(out, "}};")?;
    for layout in &STRUCTS {
        writeln!(out)?;
        write_struct(out, layout)?;
    }
    writeln!(out)?;
    writeln!(out, "#endif /* BRAID_EFA_ABI_H */")
}

fn write_struct(out: &mut impl Write, layout: &Layout) -> fmt::Result {
    writeln!(out, "struct {} {{", layout.name)?;
    for field in layout.fields {
        let (before, after) = field.decl.split_once("{}").unwrap_or((field.decl, ""));
        writeln!(out, "\t{before}{}{after};", field.name)?;
    }
    writeln!(out, "}};")
}
