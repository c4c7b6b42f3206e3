"""An embedding-bag classifier learns which words mark which topic.

Documents are bags of WORDS token ids from a vocabulary of VOCAB; each of CLASSES topics has
a few marker words, and a document of a topic holds some of its markers among random filler
words. The classifier averages the documents' word embeddings (`take` gathers the rows of the
embedding table E, `mean` averages them) and scores the topics with a dense layer:

    softmax_cross_entropy(dense(W, mean(take(E, tokens), axis=1), b), labels)

`fit` trains it in native code, a mini-batch per step (the symbolic dim "B"); the token ids
are range-checked against the vocabulary before anything runs. The gradient of `take` adds
each word's share into its row of E (scatter-add). Prints test accuracy per epoch and, for
each topic, the words the trained model finds most telling next to the true markers.

    python examples/embedding_bag.py [epochs]
"""
import sys
import time

import numpy as np

import diffc
from diffc import f32, i32, nn

VOCAB, WORDS, CLASSES, DIM = 500, 20, 4, 16  # vocabulary, words per document, topics, dim
MARKERS = 5  # marker words per topic
LR = 0.5


@diffc.function
def bag_loss(E: f32[VOCAB, DIM], W: f32[CLASSES, DIM], b: f32[CLASSES],
             tokens: i32["B", WORDS], labels: i32["B"]) -> f32:
    h = nn.mean(nn.take(E, tokens), axis=1)
    return nn.softmax_cross_entropy(nn.dense(W, h, b), labels)


@diffc.function
def bag_logits(E: f32[VOCAB, DIM], W: f32[CLASSES, DIM], b: f32[CLASSES],
               tokens: i32["B", WORDS]) -> f32["B", CLASSES]:
    return nn.dense(W, nn.mean(E[tokens], axis=1), b)


def markers() -> np.ndarray:
    """The marker words of each topic: (CLASSES, MARKERS) distinct token ids."""
    return np.random.default_rng(123).permutation(VOCAB)[:CLASSES * MARKERS].reshape(
        CLASSES, MARKERS)


def documents(rng, count: int):
    """(tokens, labels): documents with 1 to 3 marker words of their topic among fillers
    (words that mark no topic)."""
    labels = rng.integers(0, CLASSES, count).astype(np.int32)
    fillers = np.setdiff1d(np.arange(VOCAB), markers())
    tokens = rng.choice(fillers, (count, WORDS)).astype(np.int32)
    for doc, label in enumerate(labels):
        k = rng.integers(1, 4)
        tokens[doc, :k] = rng.choice(markers()[label], k)
        rng.shuffle(tokens[doc])
    return tokens, labels


def init(rng):
    return [(rng.standard_normal((VOCAB, DIM)) * 0.1).astype(np.float32),
            (rng.standard_normal((CLASSES, DIM)) * 0.1).astype(np.float32),
            np.zeros(CLASSES, np.float32)]


def accuracy(params, tokens, labels) -> float:
    return float(np.mean(np.argmax(bag_logits(*params, tokens), axis=1) == labels))


def main(epochs: int = 8):
    rng = np.random.default_rng(0)
    params = init(rng)
    train, test = documents(rng, 4000), documents(rng, 1000)
    step = diffc.train_step(bag_loss, params=["E", "W", "b"], optimizer=diffc.SGD(lr=LR))
    print(f"before training: test accuracy {accuracy(params, *test):.1%} "
          f"({CLASSES} topics, chance {1 / CLASSES:.0%})")
    start = time.perf_counter()
    for epoch in range(epochs):
        losses = step.fit(*params, *train, batch_size=32, seed=epoch)
        print(f"epoch {epoch + 1}: mean loss {losses.mean():.4f}, test accuracy "
              f"{accuracy(params, *test):.1%}")
    print(f"trained in {time.perf_counter() - start:.2f} s (compiling included)")
    E, W, b = params
    scores = W @ E.T  # how much each word pushes each topic's score
    for topic in range(CLASSES):
        top = np.argsort(-scores[topic])[:MARKERS]
        found = len(set(top) & set(markers()[topic]))
        print(f"topic {topic}: most telling words {sorted(top.tolist())}, markers "
              f"{sorted(markers()[topic].tolist())} ({found} of {MARKERS} found)")
    return accuracy(params, *test)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
