//! The `krafter` binary: parse the command line and hand over to the library.

use clap::Parser;

/// mimalloc instead of glibc's malloc. The hot paths allocate on one thread
/// and free on another (records encoded on HTTP workers and dropped by the
/// writer, delivery buffers built by lanes and freed by connection tasks),
/// which glibc serves through its arenas' locks and bin consolidation: a
/// quarter of the server's CPU under fan-out. Measured with the load tool
/// (README "Performance"): ~18 % less CPU per event under fan-out, ~8 % on
/// ingest.
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
/// fixed when it is created, at the first allocation — before `main` — so
/// this runs as a constructor ahead of mimalloc's own (priority 101), and
/// touches nothing but mimalloc's option table (no allocation, no libc).
#[ctor::ctor(unsafe, priority = 100)]
fn tune_allocator() {
    // `mi_option_e` in mimalloc.h (v3); libmimalloc-sys names neither.
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: `mi_option_set` stores an integer in a static table; mimalloc
    // reads it from then on (and skips the environment for it).
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
}
