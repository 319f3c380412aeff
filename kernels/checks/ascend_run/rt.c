/* What the lowered kernels call besides libc: MLIR's memrefCopy (non-contiguous memref.copy), the allocation
   functions of --finalize-memref-to-llvm=use-generic-functions, and __truncsfbf2. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* every local buffer (memref.alloc) starts filled with this byte: the runner sets it, runs twice, compares */
unsigned char atlas_poison = 0;

void *_mlir_memref_to_llvm_alloc(size_t size) {
  void *p = malloc(size ? size : 1);
  if (p)
    memset(p, atlas_poison, size);
  return p;
}

void *_mlir_memref_to_llvm_aligned_alloc(size_t alignment, size_t size) {
  void *p = NULL;
  if (posix_memalign(&p, alignment < sizeof(void *) ? sizeof(void *) : alignment, size ? size : 1) != 0)
    return NULL;
  memset(p, atlas_poison, size);
  return p;
}

void _mlir_memref_to_llvm_free(void *p) { free(p); }

typedef struct { int64_t rank; void *desc; } UnrankedMemRef;
typedef struct { char *base; char *data; int64_t offset; int64_t sizes_and_strides[]; } MemRefDescriptor;

static void copy_dim(int64_t elem_size, int64_t rank, int dim, const int64_t *sizes, const int64_t *src_strides,
                     const int64_t *dst_strides, const char *src, char *dst) {
  if (dim == rank) {
    memcpy(dst, src, elem_size);
    return;
  }
  for (int64_t i = 0; i < sizes[dim]; i++)
    copy_dim(elem_size, rank, dim + 1, sizes, src_strides, dst_strides, src + i * src_strides[dim] * elem_size,
             dst + i * dst_strides[dim] * elem_size);
}

void memrefCopy(int64_t elem_size, UnrankedMemRef *src, UnrankedMemRef *dst) {
  MemRefDescriptor *s = (MemRefDescriptor *)src->desc, *d = (MemRefDescriptor *)dst->desc;
  int64_t rank = src->rank;
  copy_dim(elem_size, rank, 0, s->sizes_and_strides, s->sizes_and_strides + rank, d->sizes_and_strides + rank,
           s->data + s->offset * elem_size, d->data + d->offset * elem_size);
}

/* float -> bfloat16, round to nearest even (arith.truncf f32 -> bf16): LLVM calls it, gcc 12's libgcc lacks it.
   LLVM passes bfloat like half, in an XMM register, so the bits are returned as a _Float16. */
_Float16 __truncsfbf2(float x) {
  uint32_t u;
  uint16_t h;
  _Float16 r;
  memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    h = (uint16_t)((u >> 16) | 0x40u); /* NaN stays NaN, quiet */
  else
    h = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  memcpy(&r, &h, sizeof r);
  return r;
}
