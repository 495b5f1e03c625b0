//! `crust-monitor`: one per container; see `crust::monitor`.

fn main() {
    eprintln!("crust-monitor: not implemented yet");
    std::process::exit(1);
}
