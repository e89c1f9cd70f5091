//! The `ddpm` program. For now only `ddpm bench [--json]`, the quick
//! performance report; the full command line comes later.
fn main() -> std::io::Result<()> {
    // The main thread joins rayon's pool, so that its GEMMs fork into the
    // pool cheaply instead of handing all work over and sleeping.
    rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
        .map_err(std::io::Error::other)?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench") => course::bench_report::run(args[1..].iter().any(|a| a == "--json")),
        _ => {
            eprintln!("usage: ddpm bench [--json]");
            std::process::exit(2);
        }
    }
}
