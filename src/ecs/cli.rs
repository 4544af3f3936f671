//! `ecs-image-operator ecs ACTION --region R [Key=Value ...]`: one signed ECS call with the
//! standard credential chain, for users debugging credentials and for tests.

use std::path::PathBuf;
use std::process::ExitCode;

use url::Url;

use super::client::{EcsClient, EcsClientConfig};
use super::credentials::CredentialsProvider;
use super::error::EcsError;
use super::request::SignatureVersion;

/// Exit status for a call ECS (or the network) refused.
const EXIT_CALL_FAILED: u8 = 1;
/// Exit status for a command line that cannot be turned into a call (as clap uses).
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Clone, clap::Args)]
pub struct EcsCallArgs {
    /// The ECS action, e.g. DescribeImages.
    pub action: String,
    /// Region whose endpoint is called; also sent as RegionId unless given explicitly.
    #[arg(long)]
    pub region: String,
    /// Send the call to this endpoint instead of https://ecs.<region>.aliyuncs.com.
    #[arg(long, env = "ECS_ENDPOINT")]
    pub endpoint: Option<Url>,
    /// Use the VPC endpoint https://ecs-vpc.<region>.aliyuncs.com (from inside Alibaba Cloud).
    #[arg(long, conflicts_with = "endpoint")]
    pub vpc: bool,
    /// PEM file of CA certificates trusted besides the public roots (private endpoint, proxy).
    #[arg(long, env = "ECS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Signature to send.
    #[arg(long, value_enum, default_value_t = SignatureVersion::V3)]
    pub signature: SignatureVersion,
    /// Operation parameters as Key=Value, e.g. ImageId=m-123 Status=Creating,Available.
    pub params: Vec<String>,
}

pub async fn run(args: EcsCallArgs) -> ExitCode {
    let params = match parse_params(&args.params, &args.region) {
        Ok(params) => params,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match call(&args, &params).await {
        Ok(value) => match serde_json::to_string_pretty(&value) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("Decode: {e}");
                ExitCode::from(EXIT_CALL_FAILED)
            }
        },
        Err(EcsError::Config(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EXIT_CALL_FAILED)
        }
    }
}

async fn call(
    args: &EcsCallArgs,
    params: &[(String, String)],
) -> Result<serde_json::Value, EcsError> {
    let extra_roots = match &args.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            EcsError::Config(format!("cannot read --ca-file {}: {e}", path.display()))
        })?),
        None => None,
    };
    let credentials = CredentialsProvider::from_env_trusting(extra_roots.as_deref())?;
    let config = EcsClientConfig {
        endpoint: args.endpoint.clone(),
        vpc: args.vpc,
        signature: args.signature,
        extra_root_certificates_pem: extra_roots,
        ..EcsClientConfig::default()
    };
    let client = EcsClient::new(config, credentials)?;
    client.call(&args.region, &args.action, params).await
}

/// `Key=Value` pairs (the value may contain `=`), plus `RegionId` from `--region` when absent.
fn parse_params(raw: &[String], region: &str) -> Result<Vec<(String, String)>, String> {
    let mut params = raw
        .iter()
        .map(|item| match item.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => Err(format!("parameter {item:?} is not Key=Value")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !params.iter().any(|(key, _)| key == "RegionId") {
        params.push(("RegionId".to_string(), region.to_string()));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_split_on_the_first_equals_sign() {
        let raw = vec!["ImageId=m-1".to_string(), "Filter.1.Value=a=b".to_string()];
        assert_eq!(
            parse_params(&raw, "cn-hangzhou").unwrap(),
            vec![
                ("ImageId".to_string(), "m-1".to_string()),
                ("Filter.1.Value".to_string(), "a=b".to_string()),
                ("RegionId".to_string(), "cn-hangzhou".to_string()),
            ]
        );
        let explicit = vec!["RegionId=cn-beijing".to_string()];
        assert_eq!(parse_params(&explicit, "cn-hangzhou").unwrap().len(), 1);
        assert!(parse_params(&["novalue".to_string()], "r").is_err());
        assert!(parse_params(&["=v".to_string()], "r").is_err());
    }
}
