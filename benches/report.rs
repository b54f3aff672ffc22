//! Prints every benchmark's latest results as markdown, ready for the
//! README's "Performance" section:
//!
//! ```sh
//! cargo bench --bench cycle && cargo bench --bench lookup      # criterion groups
//! cargo bench --bench first_load && cargo bench --bench scale  # fresh processes
//! cargo bench --bench report                                   # all tables, with ratios
//! ```
//!
//! The criterion tables come from `target/criterion/<group>/{mmld,glibc}/new/
//! estimates.json` (median point estimates; ratio = mmld/glibc); the others
//! are the markdown that `first_load` and `scale` saved in
//! `target/mmld-bench/`.

mod common;

fn main() {
    println!("Machine now: {}", common::machine_line());
    common::table::print(
        "Load + get + unload cycle (`cargo bench --bench cycle`)",
        &["cycle-"],
    );
    common::table::print("Symbol lookup (`cargo bench --bench lookup`)", &["lookup-"]);
    for (name, what) in [
        ("first_load.md", "First load, memory, syscalls"),
        ("scale.md", "Scale"),
        ("floor.md", "Kernel floor"),
    ] {
        let path = common::markdown_dir().join(name);
        println!("\n### {what} ({})\n", path.display());
        match std::fs::read_to_string(&path) {
            Ok(t) => println!("{t}"),
            Err(_) => println!("(not run yet)"),
        }
    }
}
