/**
 * The KV cache of one sequence, owned on the TypeScript side: one K and one V buffer per layer,
 * head-major [heads, capacity, headDim], written in place slot by slot, with a 0/1 mask of live slots.
 * The t2s_step graph reads the whole capacity and ignores slots whose mask is 0, so appending a token
 * never copies the cache; only growing the capacity does (doubling, so amortised O(1) per token).
 */
export class KvCache {
  readonly layers: number;
  readonly heads: number;
  readonly headDim: number;
  capacity: number;
  length = 0;
  k: Float32Array[];
  v: Float32Array[];
  mask: Float32Array;

  constructor(layers: number, heads: number, headDim: number, capacity: number) {
    this.layers = layers;
    this.heads = heads;
    this.headDim = headDim;
    this.capacity = capacity;
    this.k = Array.from({ length: layers }, () => new Float32Array(heads * capacity * headDim));
    this.v = Array.from({ length: layers }, () => new Float32Array(heads * capacity * headDim));
    this.mask = new Float32Array(capacity);
  }

  /** Append `n` positions given as [heads, n, headDim] per layer (prefill output or one step's k_i/v_i). */
  append(kNew: Float32Array[], vNew: Float32Array[], n: number): void {
    if (this.length + n > this.capacity) this.#grow(Math.max(this.capacity * 2, this.length + n));
    const { heads, headDim, capacity } = this;
    for (let l = 0; l < this.layers; l++) {
      for (let h = 0; h < heads; h++) {
        const src = h * n * headDim;
        const dst = (h * capacity + this.length) * headDim;
        this.k[l].set(kNew[l].subarray(src, src + n * headDim), dst);
        this.v[l].set(vNew[l].subarray(src, src + n * headDim), dst);
      }
    }
    this.mask.fill(1, this.length, this.length + n);
    this.length += n;
  }

  #grow(capacity: number): void {
    const { heads, headDim } = this;
    const copy = (old: Float32Array) => {
      const next = new Float32Array(heads * capacity * headDim);
      for (let h = 0; h < heads; h++) next.set(old.subarray(h * this.capacity * headDim, (h * this.capacity + this.length) * headDim), h * capacity * headDim);
      return next;
    };
    this.k = this.k.map(copy);
    this.v = this.v.map(copy);
    const mask = new Float32Array(capacity);
    mask.set(this.mask.subarray(0, this.length));
    this.mask = mask;
    this.capacity = capacity;
  }

  /** Bytes held, for accounting. */
  get bytes(): number {
    return 2 * this.layers * this.heads * this.capacity * this.headDim * 4 + this.capacity * 4;
  }
}
