//! JNI bridge: the native methods of `io.fasttier.kafka.jni.NativeBridge`.
//!
//! Each export converts its arguments, calls [`fasttier_core::engine::Engine`], and converts the result;
//! nothing else lives here. Every export runs inside [`errors::guard`], so a Rust panic or error reaches
//! Java as one exception and never unwinds into the JVM. Calls arrive on Kafka's own threads, which are
//! not runtime workers, so the engine's blocking entry points are safe to use.

mod errors;
mod fast;
mod handles;
mod logs;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use fasttier_core::format::keys::SegmentRef;
use fasttier_core::format::manifest::IndexKind;
use fasttier_core::metrics::Metric;
use fasttier_core::slow::CopyRequest;
use jni::objects::{JByteArray, JClass, JIntArray, JLongArray, JObject, JObjectArray, JString};
use jni::sys::{jboolean, jbyteArray, jint, jlong, jlongArray, jobjectArray, jstring, JNI_FALSE, JNI_TRUE};
use jni::JNIEnv;

use errors::{guard, invalid, BridgeResult};

/// Most bytes one `SetByteArrayRegion` copies in `streamRead` (bounds how long a copy defers safepoints).
const STREAM_COPY_SLICE: usize = 1 << 20;

fn string(env: &mut JNIEnv, s: &JString, what: &str) -> BridgeResult<String> {
    if s.is_null() {
        return Err(invalid(format!("argument {what} is null")));
    }
    Ok(env.get_string(s)?.into())
}

fn opt_string(env: &mut JNIEnv, s: &JString) -> BridgeResult<Option<String>> {
    if s.is_null() {
        return Ok(None);
    }
    Ok(Some(env.get_string(s)?.into()))
}

fn string_array(env: &mut JNIEnv, arr: &JObjectArray, what: &str) -> BridgeResult<Vec<String>> {
    if arr.is_null() {
        return Err(invalid(format!("argument {what} is null")));
    }
    let n = env.get_array_length(arr)?;
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let el = JString::from(env.get_object_array_element(arr, i)?);
        out.push(string(env, &el, what)?);
        env.delete_local_ref(el)?;
    }
    Ok(out)
}

fn new_string_array(env: &mut JNIEnv, items: &[String]) -> BridgeResult<jobjectArray> {
    let arr = env.new_object_array(items.len() as i32, "java/lang/String", JObject::null())?;
    for (i, s) in items.iter().enumerate() {
        let js = env.new_string(s)?;
        env.set_object_array_element(&arr, i as i32, &js)?;
        env.delete_local_ref(js)?;
    }
    Ok(arr.into_raw())
}

fn segment(
    env: &mut JNIEnv,
    topic: &JString,
    topic_id: &JString,
    partition: jint,
    segment_id: &JString,
    start_offset: jlong,
) -> BridgeResult<SegmentRef> {
    let topic = string(env, topic, "topic")?;
    let topic_id = string(env, topic_id, "topicId")?;
    let segment_id = string(env, segment_id, "segmentId")?;
    Ok(SegmentRef::new(&topic, &topic_id, partition, start_offset, &segment_id)?)
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_version<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
) -> jstring {
    guard(&mut env, std::ptr::null_mut(), |env| {
        let v = format!("fasttier {} (format v{})", env!("CARGO_PKG_VERSION"), fasttier_core::format::FORMAT_VERSION);
        Ok(env.new_string(v)?.into_raw())
    })
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_open<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    keys: JObjectArray<'l>,
    values: JObjectArray<'l>,
) -> jlong {
    guard(&mut env, 0, |env| {
        logs::init();
        let keys = string_array(env, &keys, "keys")?;
        let values = string_array(env, &values, "values")?;
        if keys.len() != values.len() {
            return Err(invalid("keys and values differ in length"));
        }
        let map: BTreeMap<String, String> = keys.into_iter().zip(values).collect();
        let engine = fasttier_core::engine::Engine::open(&map)?;
        let c = engine.config();
        tracing::info!(
            "fasttier engine opened: backend={:?} bucket={} endpoint={} prefix={:?} chunk_bytes={} cache_bytes={} broker_id={}",
            c.backend,
            c.s3.bucket,
            c.s3.endpoint.as_deref().unwrap_or("(aws)"),
            c.prefix,
            c.chunk_bytes,
            c.cache_bytes,
            c.broker_id
        );
        if !c.ignored_keys.is_empty() {
            tracing::warn!("ignoring settings fasttier does not know: {}", c.ignored_keys.join(", "));
        }
        Ok(handles::add_engine(engine))
    })
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_close<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    engine: jlong,
) {
    guard(&mut env, (), |_env| {
        let (engine, ops) = handles::remove_engine(engine);
        let mut running = Vec::new();
        for entry in ops {
            if let Some(op) = entry.op.lock().unwrap_or_else(|p| p.into_inner()).take() {
                running.push(op);
            }
        }
        if let Some(engine) = &engine {
            // Bounded (engine::CLOSE_WAIT): cancels the copies all at once and stops the fast tier's uploader
            // before the last reference can drop the engine.
            engine.shutdown(running);
            tracing::info!("fasttier engine closed");
        }
        Ok(())
    })
}

/// Makes every running and future call on the engine return at once (`Cancelled`); never blocks. Called by
/// `close()` before it waits for running calls.
#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_interrupt<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    engine: jlong,
) {
    guard(&mut env, (), |_env| {
        if let Ok(engine) = handles::engine(engine) {
            engine.interrupt();
        }
        Ok(())
    })
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_copyStart<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    engine: jlong,
    topic: JString<'l>,
    topic_id: JString<'l>,
    partition: jint,
    segment_id: JString<'l>,
    start_offset: jlong,
    end_offset: jlong,
    max_timestamp_ms: jlong,
    broker_id: jint,
    segment_size: jint,
    epochs: JIntArray<'l>,
    epoch_start_offsets: JLongArray<'l>,
    log_path: JString<'l>,
    offset_index_path: JString<'l>,
    time_index_path: JString<'l>,
    txn_index_path: JString<'l>,
    producer_snapshot_path: JString<'l>,
    leader_epoch_checkpoint: JByteArray<'l>,
) -> jlong {
    guard(&mut env, 0, |env| {
        let eng = handles::engine(engine)?;
        let seg = segment(env, &topic, &topic_id, partition, &segment_id, start_offset)?;
        if segment_size < 0 {
            return Err(invalid(format!("segment_size={segment_size} is negative")));
        }
        let n = env.get_array_length(&epochs)? as usize;
        if n != env.get_array_length(&epoch_start_offsets)? as usize {
            return Err(invalid("epochs and epochStartOffsets differ in length"));
        }
        let mut e = vec![0i32; n];
        let mut o = vec![0i64; n];
        env.get_int_array_region(&epochs, 0, &mut e)?;
        env.get_long_array_region(&epoch_start_offsets, 0, &mut o)?;
        let checkpoint = if leader_epoch_checkpoint.is_null() {
            Vec::new()
        } else {
            env.convert_byte_array(&leader_epoch_checkpoint)?
        };
        let req = CopyRequest {
            segment: seg,
            end_offset,
            max_timestamp_ms,
            broker_id,
            segment_size: segment_size as u64,
            leader_epochs: e.into_iter().zip(o).collect(),
            log: PathBuf::from(string(env, &log_path, "logPath")?),
            offset_index: PathBuf::from(string(env, &offset_index_path, "offsetIndexPath")?),
            time_index: PathBuf::from(string(env, &time_index_path, "timeIndexPath")?),
            transaction_index: opt_string(env, &txn_index_path)?.map(PathBuf::from),
            producer_snapshot: PathBuf::from(string(env, &producer_snapshot_path, "producerSnapshotPath")?),
            leader_epoch_checkpoint: checkpoint.into(),
        };
        let op = eng.copy_start(req);
        Ok(handles::add_op(engine, eng, op))
    })
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_opAwait<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    op: jlong,
    timeout_ms: jint,
) -> jboolean {
    guard(&mut env, JNI_FALSE, |_env| {
        let entry = handles::op(op)?;
        let mut slot = entry.op.lock().unwrap_or_else(|p| p.into_inner());
        let Some(running) = slot.as_mut() else {
            return Err(invalid(format!("operation handle={op} already finished")));
        };
        match entry.engine.copy_wait(running, Duration::from_millis(timeout_ms.max(0) as u64)) {
            None => Ok(JNI_FALSE),
            Some(result) => {
                slot.take();
                drop(slot);
                handles::remove_op(op);
                result?;
                Ok(JNI_TRUE)
            }
        }
    })
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_opCancel<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    op: jlong,
) {
    guard(&mut env, (), |_env| {
        if let Some(entry) = handles::remove_op(op) {
            let running = entry.op.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(running) = running {
                entry.engine.copy_cancel(running);
            }
        }
        Ok(())
    })
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_streamOpen<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    engine: jlong,
    topic: JString<'l>,
    topic_id: JString<'l>,
    partition: jint,
    segment_id: JString<'l>,
    start_offset: jlong,
    start_position: jint,
    end_position_inclusive: jint,
) -> jlong {
    guard(&mut env, 0, |env| {
        let eng = handles::engine(engine)?;
        let seg = segment(env, &topic, &topic_id, partition, &segment_id, start_offset)?;
        if start_position < 0 {
            return Err(invalid(format!("start_position={start_position} is negative")));
        }
        let end = if end_position_inclusive < 0 { None } else { Some(end_position_inclusive as u64) };
        let stream = eng.open_stream(&seg, start_position as u64, end)?;
        Ok(handles::add_stream(engine, eng, stream))
    })
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_streamRead<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    stream: jlong,
    buf: JByteArray<'l>,
    off: jint,
    len: jint,
) -> jint {
    guard(&mut env, -1, |env| {
        let entry = handles::stream(stream)?;
        let cap = env.get_array_length(&buf)?;
        if off < 0 || len < 0 || off.checked_add(len).is_none_or(|end| end > cap) {
            return Err(invalid(format!("off={off} len={len} outside buffer of {cap}")));
        }
        if len == 0 {
            return Ok(0);
        }
        let mut s = entry.stream.lock().unwrap_or_else(|p| p.into_inner());
        // Verified chunk bytes go straight from the stream's chunk into the Java array: no temporary buffer.
        let mut written = 0usize;
        while written < len as usize {
            if !entry.engine.runtime().block_on(s.fill())? {
                break;
            }
            let src = s.peek();
            let n = src.len().min(len as usize - written).min(STREAM_COPY_SLICE);
            // SAFETY: i8 and u8 have the same size and alignment, and src[..n] is initialised.
            let signed: &[i8] = unsafe { std::slice::from_raw_parts(src.as_ptr() as *const i8, n) };
            env.set_byte_array_region(&buf, off + written as i32, signed)?;
            s.consume(n);
            written += n;
        }
        Ok(if written == 0 { -1 } else { written as jint })
    })
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_streamAvailable<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    stream: jlong,
) -> jint {
    guard(&mut env, 0, |_env| {
        let entry = handles::stream(stream)?;
        let s = entry.stream.lock().unwrap_or_else(|p| p.into_inner());
        Ok(s.available().min(i32::MAX as usize) as jint)
    })
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_streamClose<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    stream: jlong,
) {
    guard(&mut env, (), |_env| {
        handles::remove_stream(stream);
        Ok(())
    })
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_fetchIndex<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    engine: jlong,
    topic: JString<'l>,
    topic_id: JString<'l>,
    partition: jint,
    segment_id: JString<'l>,
    start_offset: jlong,
    index_type: jint,
) -> jbyteArray {
    guard(&mut env, std::ptr::null_mut(), |env| {
        let eng = handles::engine(engine)?;
        let seg = segment(env, &topic, &topic_id, partition, &segment_id, start_offset)?;
        let kind =
            IndexKind::from_code(index_type).ok_or_else(|| invalid(format!("index_type={index_type} unknown")))?;
        let data = eng.fetch_index(&seg, kind)?;
        Ok(env.byte_array_from_slice(&data)?.into_raw())
    })
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_deleteSegment<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    engine: jlong,
    topic: JString<'l>,
    topic_id: JString<'l>,
    partition: jint,
    segment_id: JString<'l>,
    start_offset: jlong,
) {
    guard(&mut env, (), |env| {
        let eng = handles::engine(engine)?;
        let seg = segment(env, &topic, &topic_id, partition, &segment_id, start_offset)?;
        Ok(eng.delete_segment(&seg)?)
    })
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_metricDescriptors<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
) -> jobjectArray {
    guard(&mut env, std::ptr::null_mut(), |env| {
        let d: Vec<String> = Metric::ALL.iter().map(|m| m.descriptor().to_string()).collect();
        new_string_array(env, &d)
    })
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_metrics<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    engine: jlong,
) -> jlongArray {
    guard(&mut env, std::ptr::null_mut(), |env| {
        let eng = handles::engine(engine)?;
        let values = eng.metrics().snapshot();
        let arr = env.new_long_array(values.len() as i32)?;
        env.set_long_array_region(&arr, 0, &values)?;
        Ok(arr.into_raw())
    })
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_replicationPartitions<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    engine: jlong,
) -> jobjectArray {
    guard(&mut env, std::ptr::null_mut(), |env| {
        let eng = handles::engine(engine)?;
        let rows = eng.catchup().map(|c| c.partition_rows()).unwrap_or_default();
        new_string_array(env, &rows)
    })
}

#[no_mangle]
pub extern "system" fn Java_io_fasttier_kafka_jni_NativeBridge_drainLogs<'l>(
    mut env: JNIEnv<'l>,
    _c: JClass<'l>,
    max: jint,
) -> jobjectArray {
    guard(&mut env, std::ptr::null_mut(), |env| {
        logs::init();
        let records = logs::drain(max.clamp(0, 10_000) as usize);
        new_string_array(env, &records)
    })
}
