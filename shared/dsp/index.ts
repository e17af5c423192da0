export * from "./fft.js";
export * from "./spectrogram.js";
export * from "./resample.js";
export * from "./wav.js";
