/** A tensor as it crosses a worker-thread boundary: plain typed array + dims, no onnxruntime objects. */
export type TensorData = Float32Array | BigInt64Array | Int32Array | Uint8Array;
export type TensorType = "float32" | "int64" | "int32" | "bool" | "uint8";
export interface TensorLike {
  type: TensorType;
  data: TensorData;
  dims: number[];
}
export type Feeds = Record<string, TensorLike>;
/** A graph input as the loaded graph declares it: a number per fixed dimension, a name per symbolic one. */
export interface GraphInput {
  name: string;
  shape: (number | string)[];
}

export const f32 = (data: Float32Array, dims: number[]): TensorLike => ({ type: "float32", data, dims });
export const i64 = (values: ArrayLike<number> | BigInt64Array, dims: number[]): TensorLike => {
  if (values instanceof BigInt64Array) return { type: "int64", data: values, dims };
  const data = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) data[i] = BigInt(values[i]);
  return { type: "int64", data, dims };
};

export function asFloat32(t: TensorLike | undefined, name: string): Float32Array {
  if (!t || !(t.data instanceof Float32Array)) throw new Error(`output ${name} is missing or not float32`);
  return t.data;
}

export function int64ToInt32(t: TensorLike | undefined, name: string): Int32Array {
  if (!t || !(t.data instanceof BigInt64Array)) throw new Error(`output ${name} is missing or not int64`);
  const out = new Int32Array(t.data.length);
  for (let i = 0; i < out.length; i++) out[i] = Number(t.data[i]);
  return out;
}
