//! Reads the index of `mi_option_arena_eager_commit` from the `mimalloc.h` that libmimalloc-sys
//! compiles (its `DEP_MIMALLOC_INCLUDE_DIR`) and writes it to `$OUT_DIR/mi_options.rs` for
//! `src/main.rs`. libmimalloc-sys does not export that option, and its position in the
//! `mi_option_e` enum (4 in mimalloc v2 and v3 today) is no promise: a number written by hand
//! would set another option after an upgrade that adds or removes one before it. A header
//! without the option fails the build.

use std::env;
use std::fs;
use std::path::Path;

const OPTION: &str = "mi_option_arena_eager_commit";

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_MIMALLOC_INCLUDE_DIR");
    let dir = env::var("DEP_MIMALLOC_INCLUDE_DIR")
        .expect("DEP_MIMALLOC_INCLUDE_DIR: libmimalloc-sys did not say where mimalloc.h is");
    let header = Path::new(&dir).join("mimalloc.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let text =
        fs::read_to_string(&header).unwrap_or_else(|e| panic!("reading {}: {e}", header.display()));
    let index = option_index(&text, OPTION).unwrap_or_else(|| {
        panic!(
            "{}: no {OPTION} in the mi_option_e enum; see src/main.rs",
            header.display()
        )
    });
    let out = Path::new(&env::var("OUT_DIR").expect("OUT_DIR")).join("mi_options.rs");
    fs::write(
        &out,
        format!(
            "/// `{OPTION}`: its index in the `mi_option_e` enum of the mimalloc.h compiled \
             (build.rs).\nconst MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = \
             {index};\n"
        ),
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

/// The position of `name` among the members of `typedef enum mi_option_e { ... }`, counted as
/// C does: members without `= value` follow the one before. Only plain members come before the
/// options used here; a member with a value resets the count to it when the value is a number,
/// and the search gives up at one that is not (an alias such as `a = b`, after the options).
fn option_index(header: &str, name: &str) -> Option<i64> {
    let start = header.find("typedef enum mi_option_e")?;
    let body = &header[start..];
    let body = &body[body.find('{')? + 1..body.find('}')?];
    let mut next = 0i64;
    for line in body.lines() {
        let code = line.split("//").next().unwrap_or("").trim();
        for member in code.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let (ident, value) = match member.split_once('=') {
                Some((i, v)) => (i.trim(), Some(v.trim())),
                None => (member, None),
            };
            let this = match value {
                None => next,
                Some(v) => v.parse().ok()?,
            };
            if ident == name {
                return Some(this);
            }
            next = this + 1;
        }
    }
    None
}
