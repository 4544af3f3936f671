//! The per-object poller the operator is compared with, as Terraform and Crossplane's upjet
//! providers follow a copy: one CopyImage per object, then every tick one DescribeImages
//! `ImageId=` per object still in flight, until its image is Available. Every object has its own
//! timer. It signs with its own access key, through the project's ECS client.
//!
//! Its CopyImage calls obey the same client-side limit of QPS calls per second in the source
//! region as the operator's, so both sides start their copies at the same pace. Its polls keep
//! their tick, as the performance issue defines the baseline (one DescribeImages per object in
//! flight per tick): held to that budget too, 1,000 copies of 10 minutes in 4 regions (25 polls a
//! second per region at a 10 s tick) were polled every 25 s or so instead: 26,626 polls instead
//! of 60,000, and up to 43 s late, which is neither Terraform's nor upjet's behaviour.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ecs_image_operator::ecs::{
    CopyImageRequest, Credentials, CredentialsProvider, DescribeImagesRequest, EcsClient,
    EcsClientConfig, ImageStatus,
};
use tokio::task::JoinSet;

use super::config::{BenchConfig, SOURCE_IMAGE, SOURCE_REGION};
use super::launch::BASELINE_KEY;

/// One copy the baseline made and followed.
pub struct BaselineCopy {
    pub region: &'static str,
    pub image_id: String,
    /// Just before its CopyImage was sent (waiting for the rate limit included).
    pub started: DateTime<Utc>,
    /// When the poller saw it Available.
    pub seen_available: DateTime<Utc>,
}

pub struct BaselineRun {
    pub copies: Vec<BaselineCopy>,
    /// DescribeImages calls that failed (and were tried again on the next tick).
    pub failed_polls: u64,
}

/// Every status a copy can be in: ECS lists only Available images when `Status` is empty.
fn every_status() -> Vec<ImageStatus> {
    vec![
        ImageStatus::Waiting,
        ImageStatus::Creating,
        ImageStatus::Available,
        ImageStatus::UnAvailable,
        ImageStatus::CreateFailed,
    ]
}

pub async fn run(config: &BenchConfig, endpoint: &str) -> BaselineRun {
    let endpoint =
        url::Url::parse(endpoint).unwrap_or_else(|e| panic!("emulator endpoint {endpoint}: {e}"));
    let client = |region_qps| {
        EcsClient::new(
            EcsClientConfig {
                endpoint: Some(endpoint.clone()),
                region_qps,
                ..Default::default()
            },
            CredentialsProvider::fixed(Credentials::new(BASELINE_KEY.0, BASELINE_KEY.1)),
        )
        .expect("the baseline's ECS client configuration is valid")
    };
    let clients = Clients {
        copies: client(config.region_qps),
        polls: client(UNLIMITED_QPS),
    };
    let failed_polls = Arc::new(AtomicU64::new(0));
    let mut copies = JoinSet::new();
    for index in 0..config.objects {
        copies.spawn(follow_one_copy(
            clients.clone(),
            config.destination(index),
            config.poll_interval,
            failed_polls.clone(),
        ));
    }
    let mut done = Vec::with_capacity(config.objects);
    while let Some(copy) = copies.join_next().await {
        done.push(copy.expect("a baseline copy task panicked"));
    }
    BaselineRun {
        copies: done,
        failed_polls: failed_polls.load(Ordering::Relaxed),
    }
}

/// A rate no run reaches: the polls keep their tick.
const UNLIMITED_QPS: u32 = 1_000_000;

/// One client for the CopyImage calls, held to the operator's budget, one for the polls.
#[derive(Clone)]
struct Clients {
    copies: EcsClient,
    polls: EcsClient,
}

async fn follow_one_copy(
    clients: Clients,
    region: &'static str,
    tick: Duration,
    failed_polls: Arc<AtomicU64>,
) -> BaselineCopy {
    let started = Utc::now();
    let image_id = clients
        .copies
        .copy_image(&CopyImageRequest {
            source_region: SOURCE_REGION.into(),
            image_id: SOURCE_IMAGE.into(),
            destination_region: region.into(),
            client_token: Some(uuid::Uuid::new_v4().simple().to_string()),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("baseline CopyImage to {region}: {e}"))
        .image_id;
    let poll = DescribeImagesRequest {
        region: region.into(),
        image_id: Some(image_id.clone()),
        status: every_status(),
        ..Default::default()
    };
    loop {
        tokio::time::sleep(tick).await;
        match clients.polls.describe_images(&poll).await {
            Ok(answer)
                if answer
                    .images
                    .iter()
                    .any(|i| i.status == ImageStatus::Available) =>
            {
                return BaselineCopy {
                    region,
                    image_id,
                    started,
                    seen_available: Utc::now(),
                };
            }
            Ok(_) => {}
            Err(_) => {
                failed_polls.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
