//! `crust-monitor`: one per container, like conmon; all of it lives in `crust::monitor`.

fn main() {
    crust::monitor::monitor_main()
}
