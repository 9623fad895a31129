//! The `krafter` binary: parse the command line and hand over to the library.

use clap::Parser;

/// mimalloc instead of glibc's malloc. The hot paths allocate on one thread
/// and free on another (records encoded on HTTP workers and dropped by the
/// writer, delivery buffers built by lanes and freed by connection tasks),
/// which glibc serves through its arenas' locks and bin consolidation
/// (malloc/free were 15–25 % of the server's CPU in profiles). Measured with
/// the load tool: see README "Performance".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = krafter::cli::Cli::parse();
    match krafter::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", krafter::cli::output::error_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// With its defaults mimalloc commits its arenas eagerly and keeps freed
/// pages resident for a second: ~25 MiB more RSS than glibc under fan-out.
/// Committing on demand and returning freed pages at once keeps it within a
/// few MiB of glibc at the same speed (measured). An arena's commit mode is
/// fixed when it is created, at the first heap allocation, which may come
/// before `main` (in another constructor): so this runs as a constructor of
/// the lowest user-visible priority. It only stores defaults in mimalloc's
/// static option table (no allocation, no libc), which a `MIMALLOC_*`
/// environment variable still overrides.
#[ctor::ctor(unsafe, priority = 100)]
fn tune_allocator() {
    // `mi_option_e` in mimalloc.h (the same in its v2 and v3);
    // libmimalloc-sys names neither.
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: `mi_option_set_default` stores an integer in a static table,
    // read when mimalloc first needs the option.
    unsafe {
        libmimalloc_sys::mi_option_set_default(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set_default(PURGE_DELAY, 0);
    }
}
