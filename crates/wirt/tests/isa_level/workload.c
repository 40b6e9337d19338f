/* A CPU-bound program for the x86-64 ISA-level test (crates/wirt/tests/isa_level.rs).
 * Compiled by the test with `gcc -O2 -march=x86-64-vN -static`, it runs on the host and
 * in a guest on the software engine; both must print the same lines. The loops are
 * written so gcc vectorizes them and uses the level's instructions: SSE4/SSSE3 shuffles,
 * POPCNT and CRC-friendly integer code at v2; AVX2, FMA, BMI1/2, LZCNT, MOVBE at v3.
 * glibc's static start-up also checks CPUID for the ISA level the binary was built for,
 * so a CPU that does not announce the level stops it before main. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define N 4096

static float fa[N], fb[N], fc[N];
static double da[N], db[N];
static int32_t ia[N], ib[N];
static uint8_t bytes[N];

static uint64_t mix(uint64_t x) {
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 29;
	return x;
}

int main(void) {
	uint64_t s = 12345;
	for (int i = 0; i < N; i++) {
		s = mix(s + i);
		fa[i] = (float)(s & 0xffff) / 1024.0f - 32.0f;
		fb[i] = (float)((s >> 16) & 0xffff) / 2048.0f;
		da[i] = (double)(int64_t)(s >> 20) / 1e9;
		db[i] = (double)(i % 97) * 0.25 + 1.0;
		ia[i] = (int32_t)(s >> 32);
		ib[i] = (int32_t)s;
		bytes[i] = (uint8_t)(s >> 40);
	}
	/* Float multiply-add (FMA at v3), vectorized. */
	for (int r = 0; r < 50; r++)
		for (int i = 0; i < N; i++)
			fc[i] = fc[i] * 0.5f + fa[i] * fb[i];
	double fsum = 0;
	for (int i = 0; i < N; i++)
		fsum += fc[i];
	/* Double precision: division, square roots, min/max. */
	double dsum = 0;
	for (int i = 0; i < N; i++)
		dsum += sqrt(fabs(da[i]) + db[i]) / db[i] + fmax(da[i], -db[i]);
	/* Integer lanes: multiplies, shifts, compares, absolute values. */
	int64_t isum = 0;
	for (int i = 0; i < N; i++) {
		int32_t v = ia[i] * 7 - (ib[i] >> 3);
		isum += (v < 0 ? -v : v) + (ia[i] > ib[i] ? 1 : 0);
	}
	/* Bit manipulation: popcount, leading/trailing zeros, variable shifts, byte swaps. */
	uint64_t bits = 0;
	for (int i = 0; i < N; i++) {
		uint64_t x = mix((uint64_t)ia[i] * 31 + i) | 1;
		bits += (uint64_t)__builtin_popcountll(x) + (uint64_t)__builtin_clzll(x) +
		        (uint64_t)__builtin_ctzll(x) + (x >> (i & 63)) + __builtin_bswap64(x) +
		        (x & ~(x >> 7));
	}
	/* Byte search and shuffle (string functions and pshufb-friendly loops). */
	uint32_t hist[16] = {0};
	for (int i = 0; i < N; i++)
		hist[bytes[i] & 15] += bytes[(i * 13) & (N - 1)] >> 4;
	const char *text = "the quick brown fox jumps over the lazy dog";
	size_t where = (size_t)(strchr(text, 'z') - text) + strlen(text);
	uint64_t h = 0;
	for (int i = 0; i < 16; i++)
		h = h * 131 + hist[i];
	printf("fsum=%.6e\n", fsum);
	printf("dsum=%.10e\n", dsum);
	printf("isum=%lld\n", (long long)isum);
	printf("bits=%llu\n", (unsigned long long)bits);
	printf("hist=%llu where=%zu\n", (unsigned long long)h, where);
	return 0;
}
