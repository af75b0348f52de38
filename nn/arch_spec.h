// Architectures written as text for `run --arch` and nn::build_arch:
//   mlp:20,256,10          the seed MLP class (hidden, out) for three sizes, else Linear/ReLU in a Sequential
//   seed-cnn               the seed CNN (nn/module.h seed_cnn())
//   a layer sequence       whitespace-separated layers run in order, in a Sequential named 0, 1, 2, ...:
//     linear:IN,OUT[,nobias]              conv2d:IN,OUT,K[,STRIDE[,PAD]][,nobias]
//     maxpool:K[,STRIDE[,PAD]]            avgpool:K[,STRIDE[,PAD]]    avgpool (global, AdaptiveAvgPool2d(1))
//     batchnorm:N (BatchNorm1d after linear/flatten, BatchNorm2d after conv/pool)
//     flatten  relu  leakyrelu[:SLOPE]  sigmoid  tanh  softmax[:DIM] (default 1)  dropout[:P]  identity
//   e.g. "linear:20,256 relu linear:256,10", "conv2d:3,8,3,1,1 batchnorm:8 relu maxpool:2 flatten linear:128,10"
#pragma once

#include <string>

#include "nn/module.h"

namespace tb::nn {

/** The grammar above in one line per form, for error messages and --help. */
const char* arch_spec_help();

/** Parses a layer sequence (the third form above) into a Sequential; UnsupportedError names the bad
 *  token and what was expected. */
std::shared_ptr<Sequential> parse_layer_sequence(const std::string& spec);

}  // namespace tb::nn
