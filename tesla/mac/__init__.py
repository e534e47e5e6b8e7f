"""Native and parallel MAC for TESLA: the C kernel (:mod:`tesla.mac._mac`, loaded and checked
by :mod:`tesla.mac.kernel`), batch signing and packing (:mod:`tesla.mac.batch`) and the
process pool for large intervals (:mod:`tesla.mac.workers`).  The protocol core calls into this
package (the receiver's arenas go to :func:`tesla.mac.kernel.mac_arena`); it never calls back
into the receiver."""
