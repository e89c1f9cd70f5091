//! The `ddpm` program. For now only `ddpm bench [--json]`, the quick
//! performance report; the full command line comes later.
fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench") => course::bench_report::run(args[1..].iter().any(|a| a == "--json")),
        _ => {
            eprintln!("usage: ddpm bench [--json]");
            std::process::exit(2);
        }
    }
}
