fn main() {
    std::process::exit(lockfs::cli::main());
}
