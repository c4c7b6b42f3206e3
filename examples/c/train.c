/* Train the 784 -> 128 -> 10 network with the train step diffc exported (export_step.py).
 *
 * Everything comes from a fixed xorshift64* generator: weights uniform in [-0.05, 0.05),
 * biases zero, N samples with pixels uniform in [0, 1) and label (pixel sum of the first 10
 * pixels) mod 10 as a one-hot target. Each call of the exported function computes the loss,
 * the gradients and the SGD update in place. Prints the first losses, then the mean loss of
 * each epoch, which falls. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mlp_step.h"

#define N 200
#define EPOCHS 5
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

int main(void) {
    static double W1[HIDDEN * IN], b1[HIDDEN], W2[OUT * HIDDEN], b2[OUT];
    static double X[N * IN], Y[N * OUT];
    for (int i = 0; i < HIDDEN * IN; i++) W1[i] = 0.1 * uniform() - 0.05;
    for (int i = 0; i < OUT * HIDDEN; i++) W2[i] = 0.1 * uniform() - 0.05;
    memset(b1, 0, sizeof b1);
    memset(b2, 0, sizeof b2);
    for (int n = 0; n < N; n++) {
        double sum = 0;
        for (int i = 0; i < IN; i++) X[n * IN + i] = uniform();
        for (int i = 0; i < 10; i++) sum += X[n * IN + i];
        Y[n * OUT + (int)sum % OUT] = 1.0;
    }
    void *workspace = aligned_alloc(64, (diffc_train_step_mlp_loss_workspace_size() + 63) / 64 * 64);
    if (!workspace) return 1;
    double lr = 0.01, loss;
    double step_count[1] = {0};  /* updates applied: each call adds 1 (SGD has no other state) */
    for (int epoch = 0; epoch < EPOCHS; epoch++) {
        double total = 0;
        for (int n = 0; n < N; n++) {
            diffc_train_step_mlp_loss(W1, b1, W2, b2, &X[n * IN], &Y[n * OUT], lr, step_count,
                                      &loss, workspace);
            if (epoch == 0 && n < 5) printf("step %d loss %.12f\n", n, loss);
            total += loss;
        }
        printf("epoch %d mean loss %.6f\n", epoch, total / N);
    }
    printf("steps %.0f\n", step_count[0]);
    free(workspace);
    return 0;
}
