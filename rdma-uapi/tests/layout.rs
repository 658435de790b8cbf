//! The ABI defined once: the committed C header is the one the Rust definitions write, and a C
//! compiler finds every size, offset and constant of the Rust definitions in the test kernel's
//! `efa-abi.h` (the specification) and in the committed header.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::{env, fs, io::Write};

use rdma_uapi::efa::{CONSTANTS, STRUCTS, UVERBS_ABI_VERSION};
use rdma_uapi::header::{write_efa, EFA_HEADER_PATH};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_committed_header_is_the_generated_one() {
    let mut generated = String::new();
    write_efa(&mut generated).unwrap();
    let path = crate_dir().join(EFA_HEADER_PATH);
    if env::var_os("BRAID_UAPI_WRITE").is_some() {
        fs::write(&path, &generated).unwrap();
    }
    let committed = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is not what rdma-uapi/src/efa.rs writes: run BRAID_UAPI_WRITE=1 cargo test -p rdma-uapi",
        path.display()
    );
}

/// `_Static_assert`s of every size, field offset and field size, and every constant.
fn assertions() -> String {
    let mut c = String::from("#include <stddef.h>\n");
    for s in &STRUCTS {
        let t = format!("struct {}", s.name);
        c += &format!("_Static_assert(sizeof({t}) == {}, \"{t} size\");\n", s.size);
        for f in s.fields {
            c += &format!(
                "_Static_assert(offsetof({t}, {0}) == {1}, \"{t}.{0} offset\");\n\
                 _Static_assert(sizeof((({t} *)0)->{0}) == {2}, \"{t}.{0} size\");\n",
                f.name, f.offset, f.size
            );
        }
    }
    let version = ("EFA_UVERBS_ABI_VERSION", UVERBS_ABI_VERSION);
    for (name, value) in CONSTANTS.iter().chain([&version]) {
        c += &format!("_Static_assert({name} == {value}, \"{name}\");\n");
    }
    c
}

/// The test kernel's source and build trees, from the cache `qemu-testbed/env/setup` fills.
fn kernel_trees() -> (PathBuf, PathBuf) {
    let cache =
        PathBuf::from(env::var("BRAID_CACHE").unwrap_or_else(|_| "/var/cache/braid".into()));
    let src = fs::read_dir(cache.join("kernel"))
        .ok()
        .and_then(|dir| {
            dir.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("src-"))
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "no test kernel source under {}/kernel: run qemu-testbed/env/setup kernel",
                cache.display()
            )
        });
    (src, cache.join("kernel/build"))
}

/// Compiles `source` (checks only) with the kernel's userspace headers on the include path.
fn compile(source: &str, extra_include: Option<&Path>) {
    let (src, build) = kernel_trees();
    let mut cc = Command::new(env::var("CC").unwrap_or_else(|_| "cc".into()));
    // __EXPORTED_HEADERS__: the source tree's uapi headers as `make headers_install` exports them.
    cc.args([
        "-std=c11",
        "-fsyntax-only",
        "-Wall",
        "-Werror",
        "-D__EXPORTED_HEADERS__",
        "-x",
        "c",
        "-",
    ]);
    if let Some(dir) = extra_include {
        cc.arg("-I").arg(dir);
    }
    for dir in [
        src.join("include/uapi"),
        build.join("arch/x86/include/generated/uapi"),
        src.join("arch/x86/include/uapi"),
    ] {
        cc.arg("-I").arg(dir);
    }
    let mut child = cc
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("a C compiler (cc)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(source.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the C compiler disagrees:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_kernels_efa_abi_has_the_same_layout() {
    compile(
        &format!("#include <rdma/efa-abi.h>\n{}", assertions()),
        None,
    );
}

#[test]
fn the_published_header_has_the_same_layout() {
    let include = crate_dir().join("include/rdma");
    compile(
        &format!("#include <braid-efa-abi.h>\n{}", assertions()),
        Some(&include),
    );
}

#[test]
fn a_wrong_layout_is_caught() {
    // The check itself can fail: a field one byte off does not compile.
    let wrong = assertions().replacen(
        "offsetof(struct efa_ibv_create_qp_resp, llq_desc_mmap_key) == 48",
        "offsetof(struct efa_ibv_create_qp_resp, llq_desc_mmap_key) == 49",
        1,
    );
    assert_ne!(wrong, assertions(), "the assertion to break is there");
    let result =
        std::panic::catch_unwind(|| compile(&format!("#include <rdma/efa-abi.h>\n{wrong}"), None));
    assert!(result.is_err());
}
