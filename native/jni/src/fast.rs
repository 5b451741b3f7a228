//! JNI exports of the fast tier: what fasttier's RemoteLogMetadataManager learns from Kafka (the log
//! directory, leadership changes, stopped partitions), relayed by the Java `FastTierRegistry` to the
//! engine of the broker's RemoteStorageManager.
//!
//! Partitions cross as parallel arrays (topic names, topic ids as Kafka's `Uuid.toString()`, partition
//! numbers). Every entry point of [`fasttier_core::fast::FastTier`] only records the change and wakes the
//! uploader, so these calls return at once (Kafka makes them on its metadata thread). When the engine has
//! no fast tier (`wal.enable=false`) the arguments are still checked and the call does nothing.

use std::path::PathBuf;

use fasttier_core::fast::PartitionInfo;
use jni::objects::{JClass, JIntArray, JObjectArray};
use jni::sys::{jlong, jstring};
use jni::JNIEnv;

use crate::errors::{guard, invalid, BridgeResult};
use crate::{handles, string_array};

/// Status of an engine whose fast tier is off.
const DISABLED_STATUS: &str = r#"{"enabled":false,"leaders":0}"#;

/// Zips three parallel arrays into partitions; `what` names them in errors ("leader", "follower", ...).
fn partitions(
    env: &mut JNIEnv,
    topics: &JObjectArray,
    topic_ids: &JObjectArray,
    numbers: &JIntArray,
    what: &str,
) -> BridgeResult<Vec<PartitionInfo>> {
    let topics = string_array(env, topics, &format!("{what}Topics"))?;
    let topic_ids = string_array(env, topic_ids, &format!("{what}TopicIds"))?;
    if numbers.is_null() {
        return Err(invalid(format!("argument {what}Partitions is null")));
    }
    let n = env.get_array_length(numbers)? as usize;
    if topics.len() != n || topic_ids.len() != n {
        return Err(invalid(format!(
            "{what} arrays differ in length: topics={} topicIds={} partitions={n}",
            topics.len(),
            topic_ids.len()
        )));
    }
    let mut parts = vec![0i32; n];
    env.get_int_array_region(numbers, 0, &mut parts)?;
    Ok(topics
        .into_iter()
        .zip(topic_ids)
        .zip(parts)
        .map(|((topic, topic_id), partition)| PartitionInfo { topic, topic_id, partition })
        .collect())
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_fastLogDirs<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    engine: jlong,
    dirs: JObjectArray<'l>,
) {
    guard(&mut env, (), |env| {
        let eng = handles::engine(engine)?;
        let dirs: Vec<PathBuf> = string_array(env, &dirs, "dirs")?.into_iter().map(PathBuf::from).collect();
        if let Some(fast) = eng.fast() {
            tracing::info!("fast tier: log dirs {:?}", dirs);
            fast.set_log_dirs(dirs);
        }
        Ok(())
    })
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_fastLeadership<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    engine: jlong,
    leader_topics: JObjectArray<'l>,
    leader_topic_ids: JObjectArray<'l>,
    leader_partitions: JIntArray<'l>,
    follower_topics: JObjectArray<'l>,
    follower_topic_ids: JObjectArray<'l>,
    follower_partitions: JIntArray<'l>,
) {
    guard(&mut env, (), |env| {
        let eng = handles::engine(engine)?;
        let leaders = partitions(env, &leader_topics, &leader_topic_ids, &leader_partitions, "leader")?;
        let followers = partitions(env, &follower_topics, &follower_topic_ids, &follower_partitions, "follower")?;
        if let Some(c) = eng.catchup() {
            c.leadership(&leaders, &followers)?;
        }
        if let Some(fast) = eng.fast() {
            tracing::debug!("fast tier: leadership change: leaders={} followers={}", leaders.len(), followers.len());
            fast.leadership(leaders, followers)?;
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_fastStop<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    engine: jlong,
    topics: JObjectArray<'l>,
    topic_ids: JObjectArray<'l>,
    numbers: JIntArray<'l>,
) {
    guard(&mut env, (), |env| {
        let eng = handles::engine(engine)?;
        let stopped = partitions(env, &topics, &topic_ids, &numbers, "stopped")?;
        if let Some(c) = eng.catchup() {
            c.stop_partitions(&stopped)?;
        }
        if let Some(fast) = eng.fast() {
            tracing::debug!("fast tier: partitions stopped: {}", stopped.len());
            fast.stop_partitions(stopped)?;
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_fastStatus<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    engine: jlong,
) -> jstring {
    guard(&mut env, std::ptr::null_mut(), |env| {
        let eng = handles::engine(engine)?;
        let mut status = match eng.fast() {
            Some(fast) => {
                let mut status = fast.status();
                if status.is_object() {
                    status["enabled"] = true.into();
                }
                status
            }
            None => serde_json::from_str(DISABLED_STATUS).unwrap_or_default(),
        };
        if status.is_object() {
            status["replication"] = eng.catchup().map_or_else(|| serde_json::json!({"enabled": false}), |c| c.status());
        }
        let json = status.to_string();
        Ok(env.new_string(json)?.into_raw())
    })
}
