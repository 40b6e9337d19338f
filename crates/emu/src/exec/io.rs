//! Port I/O: in/out with immediate or DX port (string forms live in `string.rs`).

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::cpu::Cpu;
use crate::exceptions::R;
use crate::platform::Platform;

impl Cpu {
    pub(super) fn port_io(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        self.check_io_privilege()?;
        let (port_op, data_op) = if ins.mnemonic() == M::In {
            (1, 0)
        } else {
            (0, 1)
        };
        let port = if ins.op_kind(port_op) == OpKind::Register {
            self.gpr[2] as u16
        } else {
            ins.immediate(port_op) as u16
        };
        let size = ins.op_register(data_op).size();
        if ins.mnemonic() == M::In {
            let mut buf = [0u8; 4];
            io.pio_read(port, &mut buf[..size]);
            self.set_gpr_sized(0, size, u32::from_le_bytes(buf) as u64);
        } else {
            let v = self.gpr[0] as u32;
            io.pio_write(port, &v.to_le_bytes()[..size]);
        }
        Ok(())
    }
}
