// Ranking: the order of the best scores.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

// order[0..k) = the indices of the k highest of scores[0..n), highest first; equal
// scores in index order. MAB_E_RANGE when k > n, MAB_E_NOMEM.
int mab_rank(const double *scores, size_t n, size_t k, int64_t *order);

#ifdef __cplusplus
}
#endif
