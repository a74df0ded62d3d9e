// Shared by the test pages: bounded waits, an event log, and recorders of a remote audio track (as played,
// and as packets).
// Every wait has a timeout and says what it waited for; every step is logged to the console, which the
// Python side keeps and prints when a test fails.
"use strict";

const RATE = 48000;

function log(...args) {
  console.log(`[${(performance.now() / 1000).toFixed(3)}]`, ...args);
}

// `promise`, or a rejection naming `what` after `ms` milliseconds.
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Resolves when `target` fires `type` and `accept(event)` holds.
function nextEvent(target, type, accept = () => true) {
  return new Promise((resolve) => {
    const handler = (event) => {
      if (accept(event)) {
        target.removeEventListener(type, handler);
        resolve(event);
      }
    };
    target.addEventListener(type, handler);
  });
}

// ICE gathering finished (no trickle ICE in Voice Live: every candidate goes in the offer or answer).
function gatheringComplete(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return withTimeout(
    nextEvent(pc, "icegatheringstatechange", () => pc.iceGatheringState === "complete"),
    ms,
    "ICE gathering to complete (a browser needs --allow-loopback-in-peer-connection on loopback)",
  );
}

function connected(pc, ms) {
  if (pc.connectionState === "connected") return Promise.resolve();
  return withTimeout(
    new Promise((resolve, reject) => {
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "connected") resolve();
        if (pc.connectionState === "failed") reject(new Error("peer connection failed"));
      });
    }),
    ms,
    "the peer connection to be connected",
  );
}

// Events seen on the WebSocket ("control") and the data channel ("data"), with their arrival times.
class EventLog {
  constructor() {
    this.entries = [];
    this.waiters = [];
  }
  add(channel, text) {
    let event = null;
    try {
      event = JSON.parse(text);
    } catch (e) {
      log(`non-JSON message on ${channel}: ${String(text).slice(0, 80)}`);
    }
    const entry = { channel, t: performance.now(), event };
    this.entries.push(entry);
    this.waiters = this.waiters.filter((w) => !w.check(entry));
  }
  static matches(entry, types, channel) {
    return entry.event && types.includes(entry.event.type) && (!channel || entry.channel === channel);
  }
  // The first entry of `type` (a type or a list of them) on `channel` (if given), waiting up to `ms`.
  wait(type, channel, ms) {
    const types = Array.isArray(type) ? type : [type];
    const found = this.entries.find((e) => EventLog.matches(e, types, channel));
    if (found) return Promise.resolve(found);
    return withTimeout(
      new Promise((resolve) => {
        this.waiters.push({
          check: (e) => {
            const hit = EventLog.matches(e, types, channel);
            if (hit) resolve(e);
            return hit;
          },
        });
      }),
      ms,
      `${types.join(" or ")} on ${channel || "either channel"}`,
    );
  }
  summary() {
    return this.entries.map((e) => ({ channel: e.channel, t: e.t, event: e.event }));
  }
}

// Records a remote audio track as 48 kHz mono, with the time the first audible chunk arrived.
// Headless Chromium's getStats reports audioLevel 0, so the level is measured here, on the samples.
// A remote WebRTC track is only decoded while something plays it, hence the muted <audio> sink too.
class Recorder {
  constructor(track, threshold = 0.01) {
    this.chunks = [];
    this.firstAudible = null;
    this.threshold = threshold;
    this.sink = new Audio();
    this.sink.muted = true;
    this.sink.srcObject = new MediaStream([track]);
    this.sink.play().catch((e) => log(`audio sink: ${e}`));
    this.context = new AudioContext({ sampleRate: RATE });
    const source = this.context.createMediaStreamSource(new MediaStream([track]));
    // ScriptProcessor is deprecated but needs no module file. Smaller buffers than 4096 samples glitch
    // in headless Chromium (its fake audio output runs on a timer); the first audible 20 ms inside a
    // chunk is dated back from the callback, so the resolution is still 20 ms.
    this.node = this.context.createScriptProcessor(4096, 1, 1);
    this.node.onaudioprocess = (e) => {
      const now = performance.now();
      const data = new Float32Array(e.inputBuffer.getChannelData(0));
      if (this.firstAudible === null) {
        const step = RATE / 50;
        for (let i = 0; i + step <= data.length; i += step) {
          let sum = 0;
          for (let j = i; j < i + step; j++) sum += data[j] * data[j];
          if (Math.sqrt(sum / step) > this.threshold) {
            this.firstAudible = now - ((data.length - i - step) * 1000) / RATE;
            break;
          }
        }
      }
      this.chunks.push(data);
    };
    source.connect(this.node);
    this.node.connect(this.context.destination);
    this.context.resume();
  }
  samples() {
    const total = this.chunks.reduce((n, c) => n + c.length, 0);
    const out = new Float32Array(total);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
  // The recording as base64 of 16-bit little-endian PCM, 48 kHz mono.
  base64() {
    const f = this.samples();
    const pcm = new Int16Array(f.length);
    for (let i = 0; i < f.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(f[i] * 32767)));
    const bytes = new Uint8Array(pcm.buffer);
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(text);
  }
  stop() {
    this.node.disconnect();
    this.sink.srcObject = null;
    return this.context.close();
  }
}

// Records the encoded audio a receiver gets, before Chromium's jitter buffer: each frame's RTP timestamp
// and Opus payload, from an RTCRtpScriptTransform that passes every frame on unchanged. What the Recorder
// above hears has gone through NetEq, which stretches and shrinks audio to follow the network, and through
// a ScriptProcessor that drops whole buffers when a loaded machine runs the audio thread late; the
// packets, placed at their own timestamps, are exactly what crossed the network.
const PACKET_WORKER = `
onrtctransform = (event) => {
  self.postMessage({ log: "packet recorder attached" });
  const { readable, writable } = event.transformer;
  let first = true;
  readable.pipeThrough(new TransformStream({
    transform(frame, controller) {
      if (first) self.postMessage({ log: "first packet" });
      first = false;
      const meta = frame.getMetadata();
      self.postMessage({ ts: meta.rtpTimestamp ?? frame.timestamp, data: frame.data.slice(0) });
      controller.enqueue(frame);
    },
  })).pipeTo(writable).catch((e) => self.postMessage({ log: "pipe: " + e }));
};`;

class PacketRecorder {
  constructor(receiver) {
    this.packets = [];
    const url = URL.createObjectURL(new Blob([PACKET_WORKER], { type: "text/javascript" }));
    this.worker = new Worker(url);
    URL.revokeObjectURL(url);
    this.worker.onmessage = (e) => (e.data.log ? log(e.data.log) : this.packets.push(e.data));
    this.worker.onerror = (e) => log(`worker error ${e.message}`);
    receiver.transform = new RTCRtpScriptTransform(this.worker, {});
  }
  // [{ts, data: base64 of the Opus payload}], in arrival order.
  json() {
    return this.packets.map((p) => {
      const bytes = new Uint8Array(p.data);
      let text = "";
      for (let i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);
      return { ts: p.ts, data: btoa(text) };
    });
  }
  stop() {
    this.worker.terminate();
  }
}

// The fake microphone, without the processing a browser applies to a voice by default.
function microphone() {
  return navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
  });
}

// Inbound RTP counters of the audio (getStats' audioLevel is 0 headless, the counters are not).
async function inboundAudio(pc) {
  const stats = await pc.getStats();
  for (const s of stats.values()) {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      return {
        packets: s.packetsReceived,
        bytes: s.bytesReceived,
        samples: s.totalSamplesReceived,
        concealed: s.concealedSamples,
        silent_concealed: s.silentConcealedSamples,
        inserted_for_deceleration: s.insertedSamplesForDeceleration,
        removed_for_acceleration: s.removedSamplesForAcceleration,
        jitter_buffer_ms: s.jitterBufferEmittedCount ? (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount : null,
      };
    }
  }
  return null;
}
