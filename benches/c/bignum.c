/* bignum: many tiny short-lived blocks, after cfrac (mimalloc-bench's
 * "cfrac", Lenstra's continued-fraction factoring program with its own
 * arbitrary-precision arithmetic). Each integer is one malloc'd block of
 * 32-bit limbs; every operation allocates its result and callers free the
 * temporaries at once, as cfrac does. The work: the continued-fraction
 * expansion of sqrt(N) for a random N (the core loop of cfrac, with the
 * convergent numerators kept mod N), factorials, and Fibonacci numbers.
 *
 * Content check: every integer block carries a header word and, after its
 * limbs, a check word computed from its length and limbs; both are verified
 * when the block is freed. The arithmetic is checked too (the continued
 * fraction's exact divisions, Cassini's identity for Fibonacci numbers, and
 * n!/n == (n-1)!). checksum: over every continued-fraction term, the
 * factorials and the Fibonacci numbers. */
#include "common.h"

#define BN_MAGIC 0x5eb1a11cu

typedef struct {
  uint32_t magic, n; /* n limbs, least significant first, no leading zero limb */
  uint32_t d[];      /* d[n] is the check word */
} bn;

static long KTERMS = 3000, BITS = 160, FACT = 300, FIB = 1500, REPS = 40, SEED = 42;
static uint64_t live;

static uint32_t bn_check_word(const bn *a) {
  uint64_t h = (uint64_t)a->n * K_MIX;
  for (uint32_t i = 0; i < a->n; i++) h = (h ^ a->d[i]) * 0x100000001B3ull;
  return (uint32_t)(h ^ (h >> 32));
}

static bn *bn_new(uint32_t cap) {
  bn *a = xmalloc(sizeof(bn) + sizeof(uint32_t) * (cap + 1));
  a->n = cap;
  live++;
  return a;
}

/* Normalizes and seals a freshly computed number. */
static bn *bn_seal(bn *a) {
  while (a->n > 0 && a->d[a->n - 1] == 0) a->n--;
  a->magic = BN_MAGIC ^ a->n;
  a->d[a->n] = bn_check_word(a);
  return a;
}

static void bn_verify(const bn *a) {
  if (a->magic != (BN_MAGIC ^ a->n) || a->d[a->n] != bn_check_word(a)) {
    fprintf(stderr, "CONTENT MISMATCH: integer block %p (n %u magic %08x)\n", (void *)a, a->n,
            a->magic);
    _exit(3);
  }
}

static void bn_free(bn *a) {
  bn_verify(a);
  live--;
  free(a);
}

static bn *bn_u64(uint64_t v) {
  bn *a = bn_new(2);
  a->d[0] = (uint32_t)v;
  a->d[1] = (uint32_t)(v >> 32);
  return bn_seal(a);
}

static int bn_cmp(const bn *a, const bn *b) {
  if (a->n != b->n) return a->n < b->n ? -1 : 1;
  for (uint32_t i = a->n; i-- > 0;)
    if (a->d[i] != b->d[i]) return a->d[i] < b->d[i] ? -1 : 1;
  return 0;
}

static bn *bn_add(const bn *a, const bn *b) {
  if (a->n < b->n) { const bn *t = a; a = b; b = t; }
  bn *r = bn_new(a->n + 1);
  uint64_t c = 0;
  for (uint32_t i = 0; i < a->n; i++) {
    c += (uint64_t)a->d[i] + (i < b->n ? b->d[i] : 0);
    r->d[i] = (uint32_t)c;
    c >>= 32;
  }
  r->d[a->n] = (uint32_t)c;
  return bn_seal(r);
}

static bn *bn_sub(const bn *a, const bn *b) { /* a >= b */
  bn *r = bn_new(a->n);
  int64_t br = 0;
  for (uint32_t i = 0; i < a->n; i++) {
    int64_t v = (int64_t)a->d[i] - (i < b->n ? b->d[i] : 0) - br;
    br = v < 0;
    r->d[i] = (uint32_t)(v + (br << 32));
  }
  if (br) {
    fprintf(stderr, "ARITHMETIC ERROR: negative subtraction\n");
    _exit(3);
  }
  return bn_seal(r);
}

static bn *bn_mul(const bn *a, const bn *b) {
  bn *r = bn_new(a->n + b->n);
  memset(r->d, 0, sizeof(uint32_t) * r->n);
  for (uint32_t i = 0; i < a->n; i++) {
    uint64_t c = 0;
    for (uint32_t j = 0; j < b->n; j++) {
      c += (uint64_t)a->d[i] * b->d[j] + r->d[i + j];
      r->d[i + j] = (uint32_t)c;
      c >>= 32;
    }
    r->d[i + b->n] = (uint32_t)c;
  }
  return bn_seal(r);
}

static bn *bn_mul_small(const bn *a, uint32_t m) {
  bn *r = bn_new(a->n + 1);
  uint64_t c = 0;
  for (uint32_t i = 0; i < a->n; i++) {
    c += (uint64_t)a->d[i] * m;
    r->d[i] = (uint32_t)c;
    c >>= 32;
  }
  r->d[a->n] = (uint32_t)c;
  return bn_seal(r);
}

static bn *bn_div_small(const bn *a, uint32_t m, uint32_t *rem) {
  bn *q = bn_new(a->n);
  uint64_t r = 0;
  for (uint32_t i = a->n; i-- > 0;) {
    r = (r << 32) | a->d[i];
    q->d[i] = (uint32_t)(r / m);
    r %= m;
  }
  if (rem) *rem = (uint32_t)r;
  return bn_seal(q);
}

static uint32_t bn_bits(const bn *a) {
  if (a->n == 0) return 0;
  return 32 * (a->n - 1) + (32 - (uint32_t)__builtin_clz(a->d[a->n - 1]));
}

/* r*2 + bit, as a new number. */
static bn *bn_shl1_or(const bn *a, uint32_t bit) {
  bn *r = bn_new(a->n + 1);
  uint32_t c = bit;
  for (uint32_t i = 0; i < a->n; i++) {
    r->d[i] = (a->d[i] << 1) | c;
    c = a->d[i] >> 31;
  }
  r->d[a->n] = c;
  return bn_seal(r);
}

/* Schoolbook binary long division, one temporary per step (as a naive
 * bignum library would do it). q and/or r may be NULL. */
static void bn_divmod(const bn *a, const bn *b, bn **q, bn **r) {
  if (b->n == 0) {
    fprintf(stderr, "ARITHMETIC ERROR: division by zero\n");
    _exit(3);
  }
  bn *quo = bn_new(a->n > 0 ? a->n : 1);
  memset(quo->d, 0, sizeof(uint32_t) * quo->n);
  bn *rem = bn_u64(0);
  for (uint32_t i = bn_bits(a); i-- > 0;) {
    bn *t = bn_shl1_or(rem, (a->d[i / 32] >> (i % 32)) & 1);
    bn_free(rem);
    rem = t;
    if (bn_cmp(rem, b) >= 0) {
      t = bn_sub(rem, b);
      bn_free(rem);
      rem = t;
      quo->d[i / 32] |= 1u << (i % 32);
    }
  }
  bn_seal(quo);
  if (q) *q = quo; else bn_free(quo);
  if (r) *r = rem; else bn_free(rem);
}

static bn *bn_isqrt(const bn *a) {
  bn *x = bn_u64(1);
  for (uint32_t i = 0; i < (bn_bits(a) + 1) / 2; i++) { /* x = 2^ceil(bits/2) >= sqrt(a) */
    bn *t = bn_mul_small(x, 2);
    bn_free(x);
    x = t;
  }
  for (;;) {
    bn *q, *s, *y;
    bn_divmod(a, x, &q, NULL);
    s = bn_add(x, q);
    y = bn_div_small(s, 2, NULL);
    bn_free(q);
    bn_free(s);
    if (bn_cmp(y, x) >= 0) {
      bn_free(y);
      return x;
    }
    bn_free(x);
    x = y;
  }
}

static uint64_t hash_bn(uint64_t h, const bn *a) {
  bn_verify(a);
  for (uint32_t i = 0; i < a->n; i++) h = mix64(h ^ a->d[i]);
  return mix64(h ^ a->n);
}

static void arith_fail(const char *what) {
  fprintf(stderr, "ARITHMETIC ERROR: %s\n", what);
  _exit(3);
}

/* Continued fraction of sqrt(N): m' = d a - m, d' = (N - m'^2) / d,
 * a' = (a0 + m') / d'; convergent numerators A' = a' A + A'' (mod N). */
static uint64_t cfrac(rng_t *r, uint64_t h) {
  uint32_t limbs = (uint32_t)((BITS + 31) / 32);
  bn *N = bn_new(limbs);
  for (uint32_t i = 0; i < limbs; i++) N->d[i] = (uint32_t)rng_next(r);
  if (BITS % 32) N->d[limbs - 1] &= (1u << (BITS % 32)) - 1;
  N->d[limbs - 1] |= 1u << ((BITS - 1) % 32);
  N->d[0] |= 1;
  bn_seal(N);
  bn *a0 = bn_isqrt(N);
  bn *sq = bn_mul(a0, a0);
  int square = bn_cmp(sq, N) == 0;
  bn_free(sq);
  if (square) { /* astronomically unlikely; keep the program total */
    bn *t = bn_add(N, a0);
    bn_free(N);
    N = t;
  }
  bn *m = bn_u64(0), *d = bn_u64(1), *a = bn_add(a0, m);
  bn *A1 = bn_u64(1), *A = bn_add(a0, m); /* A_{-1} = 1, A_0 = a0 */
  for (long k = 0; k < KTERMS; k++) {
    bn *da = bn_mul(d, a);
    bn *m2 = bn_sub(da, m);
    bn_free(da);
    bn_free(m);
    m = m2;
    bn *mm = bn_mul(m, m);
    bn *num = bn_sub(N, mm);
    bn_free(mm);
    bn *d2, *rem;
    bn_divmod(num, d, &d2, &rem);
    if (rem->n != 0) arith_fail("continued fraction: inexact division");
    bn_free(rem);
    bn_free(num);
    bn_free(d);
    d = d2;
    bn *s = bn_add(a0, m);
    bn_free(a);
    bn_divmod(s, d, &a, NULL);
    bn_free(s);
    bn *aA = bn_mul(a, A);
    bn *sum = bn_add(aA, A1);
    bn_free(aA);
    bn_free(A1);
    A1 = A;
    bn_divmod(sum, N, NULL, &A);
    bn_free(sum);
    h = hash_bn(h, a);
  }
  h = hash_bn(h, A);
  bn_free(A);
  bn_free(A1);
  bn_free(a);
  bn_free(d);
  bn_free(m);
  bn_free(a0);
  bn_free(N);
  return h;
}

static uint64_t factorials(uint64_t h) {
  bn *f = bn_u64(1);
  for (long k = 1; k <= FACT; k++) {
    bn *g = bn_mul_small(f, (uint32_t)k);
    uint32_t rem;
    bn *back = bn_div_small(g, (uint32_t)k, &rem);
    if (rem != 0 || bn_cmp(back, f) != 0) arith_fail("n!/n != (n-1)!");
    bn_free(back);
    bn_free(f);
    f = g;
    h = hash_bn(h, f);
  }
  bn_free(f);
  return h;
}

static uint64_t fibonacci(uint64_t h) {
  bn *a = bn_u64(0), *b = bn_u64(1); /* F(k-1), F(k) */
  for (long k = 1; k < FIB; k++) {
    bn *c = bn_add(a, b);
    bn_free(a);
    a = b;
    b = c;
    h = hash_bn(h, b);
  }
  /* Cassini: F(n-1) F(n+1) - F(n)^2 = (-1)^n, with a = F(n-1), b = F(n). */
  bn *next = bn_add(a, b);
  bn *l = bn_mul(a, next), *rr = bn_mul(b, b);
  bn *one = bn_u64(1);
  bn *t = bn_cmp(l, rr) > 0 ? bn_sub(l, rr) : bn_sub(rr, l);
  if (bn_cmp(t, one) != 0) arith_fail("Cassini's identity");
  bn_free(t);
  bn_free(one);
  bn_free(l);
  bn_free(rr);
  bn_free(next);
  bn_free(a);
  bn_free(b);
  return h;
}

int main(int argc, char **argv) {
  opt_t opts[] = {
      {'k', "continued-fraction terms per number", &KTERMS}, {'b', "bits of N", &BITS},
      {'f', "factorials up to", &FACT}, {'F', "Fibonacci numbers up to", &FIB},
      {'r', "repetitions (a new N each)", &REPS}, {'s', "seed", &SEED},
  };
  parse_opts(argc, argv, "bignum: cfrac-like arbitrary-precision arithmetic", opts,
             sizeof opts / sizeof *opts);
  if (BITS < 8 || KTERMS < 0 || FACT < 0 || FIB < 1 || REPS < 0) {
    fprintf(stderr, "bad parameters\n");
    return 2;
  }
  rng_t r;
  rng_seed(&r, (uint64_t)SEED);
  uint64_t h = 0;
  double t0 = now_sec();
  for (long i = 0; i < REPS; i++) {
    h = cfrac(&r, h);
    h = factorials(h);
    h = fibonacci(h);
  }
  double el = now_sec() - t0;
  if (live != 0) {
    fprintf(stderr, "LEAK: %" PRIu64 " integers not freed\n", live);
    return 1;
  }
  printf("bignum: %ld x (%ld continued-fraction terms of a %ld-bit N, %ld!, F(%ld)): %.3f s\n",
         REPS, KTERMS, BITS, FACT, FIB, el);
  print_checksum(h);
  return 0;
}
