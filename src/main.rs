use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ecs_image_operator::{api, ecs, emulator, operator};

/// Manages Alibaba Cloud ECS image copy, import and export tasks from Kubernetes.
#[derive(Parser)]
#[command(name = "ecs-image-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(operator::RunArgs),
    /// Print all CustomResourceDefinitions as one YAML stream.
    Crd,
    /// Run the ECS emulator.
    Emulator(emulator::EmulatorArgs),
    /// Make one signed ECS call and print the JSON response.
    Ecs(ecs::cli::EcsCallArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => operator::run(args).await,
        Command::Crd => print_crds(),
        Command::Emulator(args) => emulator::run(args).await,
        Command::Ecs(args) => ecs::cli::run(args).await,
    }
}

fn print_crds() -> ExitCode {
    match api::crds_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ecs-image-operator crd: cannot render the CRDs: {err}");
            ExitCode::FAILURE
        }
    }
}
