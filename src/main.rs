fn main() {
    std::process::exit(upm::cli::main());
}
