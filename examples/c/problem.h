/* The problem both C programs train on: the 784 -> 128 -> 10 network's initial params and N
 * samples, all from a fixed xorshift64* generator. Weights uniform in [-0.05, 0.05), biases
 * zero, pixels uniform in [0, 1), and as one-hot target the label (sum of the first 10 pixels)
 * mod 10. */
#include <stdint.h>
#include <string.h>

#define IN 784
#define HIDDEN 128
#define OUT 10

static uint64_t rng_state = 88172645463325252ULL;

static double uniform(void) {  /* xorshift64*: 53 random bits in [0, 1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static void make_problem(double *W1, double *b1, double *W2, double *b2, double *X, double *Y,
                         int n) {
    for (int i = 0; i < HIDDEN * IN; i++) W1[i] = 0.1 * uniform() - 0.05;
    for (int i = 0; i < OUT * HIDDEN; i++) W2[i] = 0.1 * uniform() - 0.05;
    memset(b1, 0, HIDDEN * sizeof *b1);
    memset(b2, 0, OUT * sizeof *b2);
    memset(Y, 0, (size_t)n * OUT * sizeof *Y);
    for (int s = 0; s < n; s++) {
        double sum = 0;
        for (int i = 0; i < IN; i++) X[s * IN + i] = uniform();
        for (int i = 0; i < 10; i++) sum += X[s * IN + i];
        Y[s * OUT + (int)sum % OUT] = 1.0;
    }
}
