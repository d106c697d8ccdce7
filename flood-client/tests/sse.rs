//! `flood --transport sse` against a real edgecomet (started in this test process): 1,000
//! connections with a publish load; every message received once and in order, the report whole.
//! A test binary of its own, so that the server memory flood reads is that of this run alone.

mod common;

#[test]
fn sse_thousand_connections_with_a_publish_load() {
    common::thousand_connections("sse");
}
