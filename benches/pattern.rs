//! Criterion benchmarks of the STIX pattern parser: typical single-comparison patterns (hash,
//! IPv4, URL, domain), a compound one, a long one, parse + extract_ioc for one IOC, and one line of
//! `iocsync parse` output (parse, extract_ioc, JSON into a reused buffer).
// criterion's group macros define public functions without doc comments.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iocsync::pattern::{extract_ioc, extract_str, parse, write_report};
use std::hint::black_box;

const SHA256: &str =
    "[file:hashes.'SHA-256' = 'a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3']";
const MD5: &str = "[file:hashes.MD5 = 'e99a18c428cb38d5f260853678922e03']";
const IPV4: &str = "[ipv4-addr:value = '198.51.100.23']";
const URL: &str = "[url:value = 'http://evil.example.com/wp-admin/x.php?id=42']";
const DOMAIN: &str = "[domain-name:value = 'login-update.example.com']";
const COMPOUND: &str = "([file:hashes.MD5 = 'e99a18c428cb38d5f260853678922e03' AND file:name = 'invoice.exe'] OR [network-traffic:dst_ref.value ISSUBSET '198.51.100.0/24' AND network-traffic:dst_port IN (443, 8443)]) FOLLOWEDBY [process:command_line MATCHES '^cmd\\\\.exe /c .*'] WITHIN 300 SECONDS";

fn long_pattern() -> String {
    let parts: Vec<String> = (0..50)
        .map(|n| match n % 5 {
            0 => format!("file:hashes.'SHA-256' = '{:064x}'", n + 1),
            1 => format!("ipv4-addr:value = '198.51.{}.{}'", n, n + 1),
            2 => format!("domain-name:value = 'host{n}.example.com'"),
            3 => format!("url:value = 'http://host{n}.example.com/path/{n}'"),
            _ => format!("file:name = 'payload_{n}.exe'"),
        })
        .collect();
    format!("[{}]", parts.join(" OR "))
}

fn single(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_single");
    group.throughput(Throughput::Elements(1));
    for (name, pattern) in [
        ("sha256", SHA256),
        ("md5", MD5),
        ("ipv4", IPV4),
        ("url", URL),
        ("domain", DOMAIN),
    ] {
        group.bench_function(name, |b| b.iter(|| parse(black_box(pattern))));
    }
    group.finish();

    let mut group = c.benchmark_group("parse_classify_single");
    group.throughput(Throughput::Elements(1));
    for (name, pattern) in [("sha256", SHA256), ("ipv4", IPV4), ("domain", DOMAIN)] {
        group.bench_function(name, |b| {
            b.iter(|| parse(black_box(pattern)).ok().map(|p| extract_ioc(&p)))
        });
    }
    group.finish();
}

fn bigger(c: &mut Criterion) {
    let long = long_pattern();
    let mut group = c.benchmark_group("parse_other");
    group.bench_function("compound", |b| b.iter(|| parse(black_box(COMPOUND))));
    group.bench_function("long_50_comparisons", |b| {
        b.iter(|| parse(black_box(&long)))
    });
    group.bench_function("long_50_expanded", |b| {
        b.iter(|| extract_str(black_box(&long), true))
    });
    group.finish();
}

fn report_line(c: &mut Criterion) {
    let mut group = c.benchmark_group("report_line");
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(4096);
    for (name, pattern) in [("sha256", SHA256), ("ipv4", IPV4), ("url", URL)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                write_report(&mut out, black_box(pattern));
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, single, bigger, report_line);
criterion_main!(benches);
