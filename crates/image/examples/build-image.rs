//! Builds (or finds) the default guest and prints its paths, like `wirt image build`:
//!
//!     cargo run -p image --example build-image -- [minimal|stock]

use std::io::Write;

fn main() {
    let flavour = match std::env::args().nth(1).map(|s| s.parse()) {
        None => image::KernelFlavour::default(),
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            eprintln!("build-image: {e}");
            std::process::exit(2);
        }
    };
    let opts = image::BuildOptions {
        flavour,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let result = image::build(&opts, &mut |p| match p {
        image::Progress::Step(s) => eprintln!("{s}"),
        image::Progress::Compile {
            objects,
            estimate,
            current,
        } => {
            eprint!("\r\x1b[K  compiling [{objects}/~{estimate}] {current}");
            let _ = std::io::stderr().flush();
        }
    });
    match result {
        Ok(image) => {
            eprintln!(
                "{} in {:.1} s",
                if image.reused {
                    "reused the cached image"
                } else {
                    "built"
                },
                started.elapsed().as_secs_f64()
            );
            println!("kernel: {}", image.kernel.display());
            println!("initrd: {}", image.initrd.display());
        }
        Err(e) => {
            eprintln!("build-image: error: {e}");
            std::process::exit(1);
        }
    }
}
