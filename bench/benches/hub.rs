//! The hub's publish (id, history ring, the watchers of the channel: the work every publish does
//! under its channel's lock), and what a worker's first subscriber and last unsubscriber of a
//! channel add (`watch` / `unwatch`). Results in bench/RESULTS.md.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use edgecomet::pubsub::hub::{Hub, HubLimits, Now};

fn hub() -> Hub {
    Hub::new(HubLimits {
        history: 100,
        history_age: 0,
        session_queue: 100,
        session_ttl: 60,
        max_sessions: 1000,
        max_channels: 100_000,
    })
}

const NOW: Now = Now {
    secs: 10,
    unix_micros: 1_800_000_000_000_000,
    micros: 10_000_000,
};

fn publish(c: &mut Criterion) {
    let payload = Bytes::from(vec![b'x'; 64]);
    let mut g = c.benchmark_group("hub_publish_64B");
    for (name, watchers) in [("unwatched", 0usize), ("watched_by_2_workers", 2)] {
        let h = hub();
        for w in 0..watchers {
            h.watch("news", w);
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut to = None;
                h.publish_at("news", None, payload.clone(), NOW, |m, w| {
                    to = Some((m.id, w));
                })
                .expect("published");
                black_box(to)
            })
        });
    }
    g.finish();
    // A worker's first subscriber of a channel and its last leaving (1,000 channels watched by
    // others already, so the shard maps are not empty).
    let h = hub();
    let names: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    for n in &names {
        h.watch(n, 1);
    }
    c.bench_function("hub_watch_unwatch", |b| {
        let mut i = 0;
        b.iter(|| {
            let n = &names[i % names.len()];
            i += 1;
            h.watch(n, 0);
            h.unwatch(n, 0);
        })
    });
}

criterion_group!(benches, publish);
criterion_main!(benches);
