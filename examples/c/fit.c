/* Train the 784 -> 128 -> 10 network over a whole data set with the exported fit loop.
 *
 * train.c calls the exported train step once per sample; this program hands the whole data
 * set to diffc_train_step_mlp_loss_fit, which runs an epoch of steps in one call (shuffled
 * samples, forward, backward and the SGD update, with the cross-step fusion that `step.fit`
 * uses in Python). Everything it needs is in mlp_step.h: the prototype, and an enum naming
 * each slot of the table that tells the loop where the params, the data, the learning rate,
 * the step count and its scratch buffers are.
 *
 * The problem is train.c's (problem.h); each epoch shuffles the samples with a Fisher-Yates
 * shuffle drawing from the same generator. Prints the first losses, the mean
 * loss of each epoch (it falls), the step count and the sum of the trained W1. */
#include <stdio.h>
#include <stdlib.h>
#include "mlp_step.h"
#include "problem.h"

#define N 200
#define EPOCHS 5
#define FIT(slot) diffc_train_step_mlp_loss_fit_##slot  /* the header's slot names */

static void shuffle(int64_t *perm, int64_t n) {  /* Fisher-Yates */
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(uniform() * (double)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

int main(void) {
    static double W1[HIDDEN * IN], b1[HIDDEN], W2[OUT * HIDDEN], b2[OUT];
    static double X[N * IN], Y[N * OUT];
    make_problem(W1, b1, W2, b2, X, Y, N);

    double lr = 0.01, step_count[1] = {0}, carry[HIDDEN];
    void *table[FIT(slots)] = {0}, *staging[FIT(slots)] = {0};  /* per-sample: no staging */
    table[FIT(W1)] = W1;
    table[FIT(b1)] = b1;
    table[FIT(W2)] = W2;
    table[FIT(b2)] = b2;
    table[FIT(x)] = X;  /* the whole data set: sample perm[s] is row perm[s] */
    table[FIT(y)] = Y;
    table[FIT(lr)] = &lr;
    table[FIT(step_count)] = step_count;
    table[FIT(carry0)] = carry;  /* scratch: the next sample's W1 @ x */
    table[FIT(next0)] = X;  /* the data the next sample comes from */

    void *workspace = aligned_alloc(64, (FIT(workspace_size)() + 63) / 64 * 64);
    if (!workspace) return 1;
    int64_t perm[N];
    double losses[N];
    for (int64_t n = 0; n < N; n++) perm[n] = n;
    for (int epoch = 0; epoch < EPOCHS; epoch++) {
        shuffle(perm, N);
        diffc_train_step_mlp_loss_fit(table, perm, 0, N, 1, N, losses, staging, workspace);
        double total = 0;
        for (int s = 0; s < N; s++) total += losses[s];
        if (epoch == 0)
            for (int s = 0; s < 5; s++) printf("fit step %d loss %.17g\n", s, losses[s]);
        printf("fit epoch %d mean loss %.17g\n", epoch, total / N);
    }
    double w1_sum = 0;
    for (int i = 0; i < HIDDEN * IN; i++) w1_sum += W1[i];
    printf("fit steps %.0f\nfit W1 sum %.17g\n", step_count[0], w1_sum);
    free(workspace);
    return 0;
}
