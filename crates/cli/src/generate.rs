//! `fastables generate man|completions DIR`, hidden: the manual pages
//! (`fastables.8` and one `fastables-SUBCOMMAND.8` each) and the bash, zsh
//! and fish completions, made from the clap definition the command parses
//! with, so they cannot drift from it. `deploy/deb/build.sh` runs it when it
//! builds the package. It is not part of that definition (`Cli::command()`),
//! so neither the pages nor the completions mention it.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches};
use clap_complete::Shell;

use crate::{Cli, CliError};

/// The subcommand's name.
pub const NAME: &str = "generate";

/// The section of the pages: the binary is a daemon in /usr/sbin.
const SECTION: &str = "8";

#[derive(Args, Debug)]
struct GenerateArgs {
    /// man: DIR/fastables.8 and DIR/fastables-SUBCOMMAND.8; completions:
    /// DIR/fastables.bash, DIR/_fastables (zsh), DIR/fastables.fish.
    #[arg(value_parser = ["man", "completions"])]
    what: String,
    /// Where the files go (created if missing).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

/// The hidden subcommand, added beside `Cli`'s at parse time.
pub fn command() -> clap::Command {
    GenerateArgs::augment_args(clap::Command::new(NAME).hide(true))
}

/// Runs `fastables generate` with its parsed arguments.
pub fn run(m: &ArgMatches) -> Result<(), CliError> {
    let a = GenerateArgs::from_arg_matches(m).map_err(|e| CliError::Start(e.to_string()))?;
    std::fs::create_dir_all(&a.dir).map_err(|source| CliError::Write {
        path: a.dir.clone(),
        source,
    })?;
    let written = match a.what.as_str() {
        "man" => man_pages(&a.dir),
        _ => completions(&a.dir),
    };
    written.map_err(|source| CliError::Write {
        path: a.dir,
        source,
    })
}

/// What `fastables.8` adds to clap's sections (roff).
const TOP_EXTRA: &str = ".SH FILES\n\
    .TP\n/etc/fastables/fastables.toml\n\
    The configuration: interfaces, routes, neighbors, workers, conntrack, \
    the control socket, the metrics listener; its \\fBrules\\fR key names \
    the rules file.\n\
    .TP\n/etc/fastables/rules.v4\n\
    The rules, in \\fBiptables\\-save\\fR(8) format.\n\
    .TP\n/run/fastables.sock\n\
    The control socket when the configuration names none.\n\
    .SH \"SEE ALSO\"\n\
    .BR iptables\\-save (8),\n.BR iptables (8),\n.BR conntrack (8)\n";

/// `fastables.8` (its SUBCOMMANDS section names the other pages) and a
/// page per subcommand.
fn man_pages(dir: &Path) -> std::io::Result<()> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let name = cmd.get_name().to_string();
    let version = cmd.get_version().unwrap_or_default().to_string();
    let subs: Vec<clap::Command> = cmd.get_subcommands().cloned().collect();
    write_page(dir, cmd, &name, &version, TOP_EXTRA)?;
    let back = format!(".SH \"SEE ALSO\"\n.BR {name} ({SECTION})\n");
    for sub in subs {
        write_page(dir, sub, &name, &version, &back)?;
    }
    Ok(())
}

/// One page: clap_mangen's rendering, then `extra` (roff).
fn write_page(
    dir: &Path,
    cmd: clap::Command,
    name: &str,
    version: &str,
    extra: &str,
) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd)
        .section(SECTION)
        .source(format!("{name} {version}"))
        .manual("System Administration");
    let mut f = std::fs::File::create(dir.join(man.get_filename()))?;
    man.render(&mut f)?;
    f.write_all(extra.as_bytes())?;
    f.flush()
}

/// The completions for bash, zsh and fish, under clap_complete's file names.
fn completions(dir: &Path) -> std::io::Result<()> {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_string();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, &name, dir)?;
    }
    Ok(())
}
