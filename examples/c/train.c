/* Train the 784 -> 128 -> 10 network with the train step diffc exported (export_step.py), on
 * the problem of problem.h. Each call of the exported function computes the loss, the
 * gradients and the SGD update in place. Prints the first losses, then the mean loss of each
 * epoch, which falls. */
#include <stdio.h>
#include <stdlib.h>
#include "mlp_step.h"
#include "problem.h"

#define N 200
#define EPOCHS 5

int main(void) {
    static double W1[HIDDEN * IN], b1[HIDDEN], W2[OUT * HIDDEN], b2[OUT];
    static double X[N * IN], Y[N * OUT];
    make_problem(W1, b1, W2, b2, X, Y, N);
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
