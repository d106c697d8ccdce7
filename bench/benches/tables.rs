//! The connection table (issue 20): `edgecomet::chunks::Chunked`, entries in chunks of
//! 1,024 that never move, against the `slab` crate's doubling `Vec` it replaced. The fan-out
//! looks up one entry per subscriber per message, and every accept and close inserts and
//! removes one: those three, on tables of 15,000 entries of the connection entry's size (80
//! bytes).

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use edgecomet::chunks::Chunked;
use slab::Slab;

/// An entry the size of `Conn`.
#[derive(Clone, Copy)]
struct Entry([u64; 10]);

const N: usize = 15_000;

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("table_lookup_15000");
    g.throughput(Throughput::Elements(N as u64));
    let mut chunked = Chunked::new();
    let mut slab = Slab::new();
    for i in 0..N {
        chunked.insert(Entry([i as u64; 10]));
        slab.insert(Entry([i as u64; 10]));
    }
    // The fan-out's order: a channel's subscribers, in the order they joined (here: a stride,
    // so that the walk is not a plain sequential scan).
    let order: Vec<usize> = (0..N).map(|i| (i * 7919) % N).collect();
    g.bench_function("chunked", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &k in &order {
                sum = sum.wrapping_add(chunked[k].0[1]);
            }
            black_box(sum)
        })
    });
    g.bench_function("slab", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &k in &order {
                sum = sum.wrapping_add(slab[k].0[1]);
            }
            black_box(sum)
        })
    });
    g.finish();
}

fn churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("table_insert_remove_15000");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("chunked", |b| {
        let mut t = Chunked::new();
        b.iter(|| {
            for i in 0..N {
                t.insert(Entry([i as u64; 10]));
            }
            for k in 0..N {
                black_box(t.remove(k));
            }
        })
    });
    g.bench_function("slab", |b| {
        let mut t = Slab::new();
        b.iter(|| {
            for i in 0..N {
                t.insert(Entry([i as u64; 10]));
            }
            for k in 0..N {
                black_box(t.remove(k));
            }
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    lookups(&mut c);
    churn(&mut c);
    c.final_summary();
}
