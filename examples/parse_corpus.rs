//! Generates and validates STIX pattern corpora, for `bench/compare-stix2-patterns.sh`.
//!
//! ```text
//! cargo run --release --example parse_corpus -- generate <count> <seed> > corpus.txt
//! cargo run --release --example parse_corpus -- generate-single <count> <seed> > singles.txt
//! cargo run --release --example parse_corpus -- validate corpus.txt verdicts.txt
//! cargo run --release --example parse_corpus -- typical
//! ```
//! `generate` prints `count` varied, realistic patterns (mostly single IOCs, then compound and
//! qualified ones, other object types, long ones, and about 7 % invalid ones), one per line.
//! `generate-single` prints only single-comparison patterns on the supported IOC paths (every hash
//! spelling, IPv4 with some CIDRs, IPv6, domain, hostname, URL): the bulk of a real feed, and the
//! corpus of `bench/parse-end-to-end.sh`.
//! `validate` parses every line, writes `1`/`0` per line to the verdict file, and prints the
//! throughput of `parse` alone and of `parse` + `extract_ioc` (repeating the corpus until at least one
//! second has passed, so the figure is stable).
//! `typical` times `parse` on typical single-comparison patterns and prints the best of 200
//! batches of 2,000 parses each: on a shared, oversubscribed machine the best batch is the one
//! least disturbed by other processes (criterion's mean is not).

use iocsync::pattern::{extract_ioc, parse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["generate", count, seed] => {
            let mut rng = StdRng::seed_from_u64(seed.parse()?);
            let mut out = String::new();
            for _ in 0..count.parse::<usize>()? {
                out.push_str(&pattern(&mut rng));
                out.push('\n');
            }
            print!("{out}");
            Ok(())
        }
        ["generate-single", count, seed] => {
            let mut rng = StdRng::seed_from_u64(seed.parse()?);
            let mut out = String::new();
            for _ in 0..count.parse::<usize>()? {
                out.push('[');
                out.push_str(&single_comparison(&mut rng));
                out.push_str("]\n");
            }
            print!("{out}");
            Ok(())
        }
        ["validate", corpus, verdicts] => validate(corpus, verdicts),
        ["typical"] => {
            typical();
            Ok(())
        }
        _ => {
            Err("usage: parse_corpus generate|generate-single <count> <seed> | validate <corpus> <verdicts> | typical".into())
        }
    }
}

fn validate(corpus: &str, verdicts: &str) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(corpus)?;
    let lines: Vec<&str> = text.lines().collect();
    let verdict: String = lines
        .iter()
        .map(|l| if parse(l).is_ok() { "1\n" } else { "0\n" })
        .collect();
    std::fs::write(verdicts, verdict)?;
    let valid = lines.iter().filter(|l| parse(l).is_ok()).count();

    let rate = |work: &dyn Fn() -> usize| {
        let start = Instant::now();
        let mut done = 0usize;
        let mut sink = 0usize;
        while start.elapsed() < Duration::from_secs(1) {
            sink = sink.wrapping_add(work());
            done += lines.len();
        }
        std::hint::black_box(sink);
        done as f64 / start.elapsed().as_secs_f64()
    };
    let parse_rate = rate(&|| lines.iter().filter(|l| parse(l).is_ok()).count());
    let classify_rate = rate(&|| {
        lines
            .iter()
            .filter_map(|l| parse(l).ok())
            .filter(|p| extract_ioc(p).is_ok())
            .count()
    });
    println!(
        "rust patterns={} valid={} parse_per_s={:.0} parse_classify_per_s={:.0}",
        lines.len(),
        valid,
        parse_rate,
        classify_rate
    );
    Ok(())
}

/// Best-of-batches time per parse of typical single-comparison patterns.
fn typical() {
    let patterns = [
        ("sha256", "[file:hashes.'SHA-256' = 'a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3']"),
        ("md5", "[file:hashes.MD5 = 'e99a18c428cb38d5f260853678922e03']"),
        ("ipv4", "[ipv4-addr:value = '198.51.100.23']"),
        ("url", "[url:value = 'http://evil.example.com/wp-admin/x.php?id=42']"),
        ("domain", "[domain-name:value = 'login-update.example.com']"),
    ];
    const BATCH: u32 = 2_000;
    for (name, pattern) in patterns {
        let mut best = Duration::MAX;
        for _ in 0..200 {
            let start = Instant::now();
            for _ in 0..BATCH {
                std::hint::black_box(parse(std::hint::black_box(pattern)).is_ok());
            }
            best = best.min(start.elapsed());
        }
        println!(
            "typical {name:<7} {:>6.0} ns/parse (best batch)",
            best.as_nanos() as f64 / f64::from(BATCH)
        );
    }
}

/// Picks one element.
fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn hex(rng: &mut StdRng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect()
}

fn label(rng: &mut StdRng) -> String {
    let len = rng.random_range(3..12);
    (0..len)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}

fn domain(rng: &mut StdRng) -> String {
    let tld = pick(
        rng,
        &["com", "net", "org", "ru", "info", "xyz", "top", "io"],
    );
    if rng.random_bool(0.3) {
        format!("{}.{}.{tld}", label(rng), label(rng))
    } else {
        format!("{}.{tld}", label(rng))
    }
}

fn ipv4(rng: &mut StdRng) -> String {
    let o: [u8; 4] = rng.random();
    format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])
}

fn ipv6(rng: &mut StdRng) -> String {
    let w: [u16; 4] = rng.random();
    format!("2001:db8:{:x}:{:x}::{:x}:{:x}", w[0], w[1], w[2], w[3])
}

fn url(rng: &mut StdRng) -> String {
    let scheme = pick(rng, &["http", "https"]);
    let path = pick(
        rng,
        &[
            "/",
            "/index.php",
            "/wp-admin/x.php?id=",
            "/dl/payload.exe",
            "/a/b/c",
        ],
    );
    format!("{scheme}://{}{path}{}", domain(rng), label(rng))
}

fn hash_comparison(rng: &mut StdRng) -> String {
    let (keys, len): (&[&str], usize) = *pick(
        rng,
        &[
            (&["MD5", "'MD5'", "md5"][..], 32),
            (&["'SHA-1'", "SHA1", "sha1"][..], 40),
            (&["'SHA-256'", "SHA256", "sha256", "'sha-256'"][..], 64),
        ],
    );
    let key = *pick(rng, keys);
    let mut value = hex(rng, len);
    if rng.random_bool(0.2) {
        value = value.to_ascii_uppercase();
    }
    format!("file:hashes.{key} = '{value}'")
}

fn single_comparison(rng: &mut StdRng) -> String {
    match rng.random_range(0..100) {
        0..=44 => hash_comparison(rng),
        45..=59 => format!("ipv4-addr:value = '{}'", ipv4(rng)),
        60..=62 => format!(
            "ipv4-addr:value = '{}/{}'",
            ipv4(rng),
            rng.random_range(8..=32)
        ),
        63..=67 => format!("ipv6-addr:value = '{}'", ipv6(rng)),
        68..=79 => format!("domain-name:value = '{}'", domain(rng)),
        80..=82 => format!("hostname:value = '{}'", domain(rng)),
        _ => format!("url:value = '{}'", url(rng)),
    }
}

fn other_comparison(rng: &mut StdRng) -> String {
    match rng.random_range(0..12) {
        0 => format!("email-addr:value = '{}@{}'", label(rng), domain(rng)),
        1 => format!("file:name = '{}.exe'", label(rng)),
        2 => format!("file:size > {}", rng.random_range(0..10_000_000)),
        3 => format!("network-traffic:dst_port = {}", rng.random_range(1..65536)),
        4 => format!(
            "windows-registry-key:key LIKE 'HKEY_LOCAL_MACHINE\\\\Software\\\\{}%'",
            label(rng)
        ),
        5 => format!("process:command_line MATCHES '^{}.*\\\\.exe$'", label(rng)),
        6 => format!(
            "network-traffic:dst_ref.value ISSUBSET '{}/{}'",
            ipv4(rng),
            rng.random_range(8..32)
        ),
        7 => format!(
            "ipv4-addr:value IN ('{}', '{}', '{}')",
            ipv4(rng),
            ipv4(rng),
            ipv4(rng)
        ),
        8 => "EXISTS file:extensions.'windows-pebinary-ext'".to_owned(),
        9 => format!(
            "file:created >= t'2023-0{}-1{}T10:00:00.000Z'",
            rng.random_range(1..10),
            rng.random_range(0..10)
        ),
        10 => format!("user-account:user_id NOT = '{}'", label(rng)),
        _ => format!(
            "file:extensions.'windows-pebinary-ext'.sections[*].entropy > {}.{}",
            rng.random_range(0..8),
            rng.random_range(0..100)
        ),
    }
}

fn comparison(rng: &mut StdRng) -> String {
    if rng.random_bool(0.75) {
        single_comparison(rng)
    } else {
        other_comparison(rng)
    }
}

fn qualifier(rng: &mut StdRng) -> String {
    match rng.random_range(0..3) {
        0 => format!(" WITHIN {} SECONDS", rng.random_range(1..3600)),
        1 => format!(" REPEATS {} TIMES", rng.random_range(2..10)),
        _ => " START t'2024-01-01T00:00:00Z' STOP t'2024-12-31T23:59:59Z'".to_owned(),
    }
}

fn compound(rng: &mut StdRng, max: usize) -> String {
    let n = rng.random_range(2..=max);
    let op = if rng.random_bool(0.7) {
        " OR "
    } else {
        " AND "
    };
    if rng.random_bool(0.5) {
        let parts: Vec<String> = (0..n).map(|_| comparison(rng)).collect();
        format!("[{}]", parts.join(op))
    } else {
        let op = *pick(rng, &[" OR ", " AND ", " FOLLOWEDBY "]);
        let parts: Vec<String> = (0..n)
            .map(|_| {
                let q = if rng.random_bool(0.2) {
                    qualifier(rng)
                } else {
                    String::new()
                };
                format!("[{}]{q}", comparison(rng))
            })
            .collect();
        parts.join(op)
    }
}

/// A broken pattern of a kind seen in the wild (or in hand-edited feeds).
fn invalid(rng: &mut StdRng) -> String {
    let good = format!("[{}]", single_comparison(rng));
    match rng.random_range(0..10) {
        0 => good.trim_end_matches(']').to_owned(),
        1 => format!("[file:hashes.SHA-256 = '{}']", hex(rng, 64)),
        2 => format!("[file:hashes.MD5 = '{}']", hex(rng, 31)),
        3 => good.replace(" = ", " == '").replace("'']", "']"),
        4 => format!("[ipv4-addr:value = '{}'] within 5 seconds", ipv4(rng)),
        5 => format!("[domain-name:value = \"{}\"]", domain(rng)),
        6 => format!("[url:value = '{}' and url:value = 'x']", url(rng)),
        7 => format!("[file:size = 0{}]", rng.random_range(1..100)),
        8 => format!(
            "[file:created = t'2024-13-01T00:00:00Z' OR {}]",
            comparison(rng)
        ),
        _ => good.replacen('[', "", 1),
    }
}

fn pattern(rng: &mut StdRng) -> String {
    match rng.random_range(0..100) {
        0..=64 => format!("[{}]", single_comparison(rng)),
        65..=72 => format!("[{}]", other_comparison(rng)),
        73..=84 => compound(rng, 4),
        85..=87 => format!("[{}]{}", comparison(rng), qualifier(rng)),
        88..=92 => compound(rng, 30),
        _ => invalid(rng),
    }
}
