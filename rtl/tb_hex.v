// tb_hex: replay an `imcsim vectors` folder on imc_colgroup with $readmemh and dump the
// responses as CSV (rtl.csv) and VCD (rtl.vcd) for `imcsim check`.
//
//   iverilog -g2005 -s tb_hex -Ptb_hex.N_CYCLES=<n_cycles> [-Ptb_hex.VREF_MODE=...] \
//       -o tb_hex.vvp rtl/tb_hex.v rtl/imc_colgroup.v
//   vvp -n tb_hex.vvp +VECTORS=path/to/vectors/ +OUT=path/to/out/
//   imcsim check path/to/vectors path/to/out/rtl.csv
//
// y_int is the RTL's output register (the CSV has it on every line; imcsim check compares it
// on the group_done lines).  Only single-tile vector sets (one row tile, one column tile) are replayed: weights.hex
// holds the tile's R stored rows.  Field positions come from manifest.json (ctrl.hex).
// LEVEL_BITS > 1 (multi-level rows, hardware-model.md 4.8) also reads row_level.hex, whose
// field width (manifest.json) must equal LEVEL_BITS; the Vref levels are then in level units.
`timescale 1ns/1ps

module tb_hex;
    parameter ROWS = 64, COLS = 8, KW = 4, ADC_BITS = 5, SCALE_FRAC = 8, ACC_BITS = 20;
    parameter SATURATE = 1, HALF_LSB = 0, XSH_BITS = 4;
    parameter OUT_FRAC = 12, OUT_BITS = 48, OUT_ROUND = 2;
    parameter DEN_BITS = 2;                                  // log2(den_x * den_w)
    parameter N_CYCLES = 1;
    parameter VREF_MODE = 1, VREF_FIXED = 48, VREF_LOW = 31, VREF_HIGH = 64;
    parameter CLEAR_LSB = 0, XSH_LSB = 5, XSH_W = 3;      // ctrl.hex fields (manifest.json)
    parameter LEVEL_BITS = 1;                               // 1: binary rows (row_mask.hex)
    parameter ADC_ROUND = 0;                                // adc_rounding of the vectors' config: 0 floor, 1 half_up
    localparam G = COLS / KW;
    localparam CNT_BITS = $clog2(ROWS * ((1 << LEVEL_BITS) - 1) + 1);
    localparam ROW_BITS = $clog2(ROWS + 1);
    localparam RA = (ROWS > 1) ? $clog2(ROWS) : 1;

    reg clk = 0, rst = 1;
    always #5 clk = ~clk;

    reg                  w_we = 0;
    reg  [RA-1:0]        w_addr = 0;
    reg  [COLS-1:0]      w_data = 0;
    reg                  start = 0, clear = 0;
    reg  [ROWS-1:0]      row_in = 0, row_mask = 0;
    reg  [ROWS*LEVEL_BITS-1:0] row_level = 0;
    reg  [XSH_BITS-1:0]  x_shift = 0;
    wire                 busy, done;
    wire [ROW_BITS-1:0]  active_rows;
    wire [CNT_BITS-1:0]  level_sum, full_scale;
    wire [COLS*CNT_BITS-1:0] count;
    wire [COLS*ADC_BITS-1:0] code, sar_dec;
    wire [G*ACC_BITS-1:0]    acc;
    wire [G*OUT_BITS-1:0]    y_int;

    imc_colgroup #(.ROWS(ROWS), .COLS(COLS), .KW(KW), .ADC_BITS(ADC_BITS),
                   .SCALE_FRAC(SCALE_FRAC), .ACC_BITS(ACC_BITS), .SATURATE(SATURATE),
                   .HALF_LSB(HALF_LSB), .XSH_BITS(XSH_BITS), .OUT_FRAC(OUT_FRAC),
                   .OUT_BITS(OUT_BITS), .OUT_ROUND(OUT_ROUND), .LEVEL_BITS(LEVEL_BITS),
                   .ADC_ROUND(ADC_ROUND)) dut (
        .clk(clk), .rst(rst), .w_we(w_we), .w_addr(w_addr), .w_data(w_data),
        .vref_mode(VREF_MODE[1:0]), .vref_fixed(VREF_FIXED[CNT_BITS-1:0]),
        .vref_low(VREF_LOW[CNT_BITS-1:0]), .vref_high(VREF_HIGH[CNT_BITS-1:0]),
        .start(start), .row_in(row_in), .row_mask(row_mask), .row_level(row_level),
        .x_shift(x_shift),
        .clear(clear), .den_bits(DEN_BITS[XSH_BITS-1:0]), .busy(busy), .done(done),
        .active_rows(active_rows), .level_sum(level_sum),
        .full_scale(full_scale), .count(count), .code(code), .sar_dec(sar_dec), .acc(acc),
        .y_int(y_int));

    reg [COLS-1:0] wmem_file [0:ROWS-1];
    reg [63:0]     ctrl_mem  [0:N_CYCLES-1];
    reg [ROWS-1:0] rin_mem   [0:N_CYCLES-1];
    reg [ROWS-1:0] rmask_mem [0:N_CYCLES-1];
    reg [ROWS*LEVEL_BITS-1:0] rlevel_mem [0:N_CYCLES-1];
    reg [8*512-1:0] vdir, odir;
    integer i, c, fd;
    reg [63:0] ctrl_word;

    initial begin
        if (!$value$plusargs("VECTORS=%s", vdir)) vdir = "./";
        if (!$value$plusargs("OUT=%s", odir)) odir = "./";
        for (i = 0; i < ROWS; i = i + 1) wmem_file[i] = 0;
        $readmemh({vdir, "weights.hex"}, wmem_file);
        $readmemh({vdir, "ctrl.hex"}, ctrl_mem);
        $readmemh({vdir, "row_input.hex"}, rin_mem);
        $readmemh({vdir, "row_mask.hex"}, rmask_mem);
        if (LEVEL_BITS > 1)
            $readmemh({vdir, "row_level.hex"}, rlevel_mem);
        $dumpfile({odir, "rtl.vcd"});
        $dumpvars(1, dut);
        fd = $fopen({odir, "rtl.csv"}, "w");
        $fwrite(fd, "cycle,column,output,code,column_count,sar_decision,active_rows,full_scale,nmc_acc,y_int\n");
        @(negedge clk); @(negedge clk);
        rst = 0;
        for (i = 0; i < ROWS; i = i + 1) begin
            w_we = 1; w_addr = i; w_data = wmem_file[i];
            @(negedge clk);
        end
        w_we = 0;
        for (i = 0; i < N_CYCLES; i = i + 1) begin
            ctrl_word = ctrl_mem[i];
            row_in   = rin_mem[i];
            row_mask = rmask_mem[i];
            if (LEVEL_BITS > 1)
                row_level = rlevel_mem[i];
            x_shift  = ctrl_word[XSH_LSB +: XSH_W];
            clear    = ctrl_word[CLEAR_LSB];
            start    = 1;
            @(negedge clk);
            start    = 0;
            @(posedge done);
            #1;
            for (c = 0; c < COLS; c = c + 1)
                $fwrite(fd, "%0d,%0d,,%0d,%0d,%0d,%0d,%0d,,\n", i, c,
                        code[c*ADC_BITS +: ADC_BITS], count[c*CNT_BITS +: CNT_BITS],
                        sar_dec[c*ADC_BITS +: ADC_BITS], active_rows, full_scale);
            for (c = 0; c < G; c = c + 1)
                $fwrite(fd, "%0d,,%0d,,,,,,%0d,%0d\n", i, c, $signed(acc[c*ACC_BITS +: ACC_BITS]),
                        $signed(y_int[c*OUT_BITS +: OUT_BITS]));
            @(negedge clk);
        end
        $fclose(fd);
        $display("tb_hex: replayed %0d array cycles", N_CYCLES);
        $finish;
    end
endmodule
