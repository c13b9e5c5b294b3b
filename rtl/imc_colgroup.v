// imc_colgroup: one column group of the charge-domain IMC macro, ideal analog.
//
// Reference: imcsim docs/hardware-model.md (sections 4.1-4.6, 4.8) and docs/golden-model.md.
//   * ROWS x COLS XNOR bit cells, each row driven at a level d_r: with LEVEL_BITS = 1 the
//     row mask (d_r = row_mask[r], binary rows, 4.1), with LEVEL_BITS > 1 the row DAC level
//     row_level[r*LEVEL_BITS +: LEVEL_BITS] (0 = masked, 4.8; row_mask is then unused);
//     per column count_c = sum_r d_r * XNOR(row_in[r], w[r][c]) (4.2, 4.8), the level sum
//     A = sum_r d_r (level_sum) and the driven rows #{r : d_r > 0} (active_rows); with
//     binary rows A = active_rows.  Counts, A and F are in level units, up to
//     ROWS * (2**LEVEL_BITS - 1);
//   * the cycle's full scale F from the level sum A and the Vref mode (4.3);
//   * a SAR ADC per column with an ideal comparator and CDAC: step s tries
//     trial = D | 1 << (ADC_BITS-1-s) and keeps it iff count * L + a >= F * trial, which is
//     exactly code = min(floor((count * L + a) / F), L) (4.5 with no mismatch or noise);
//     a = 0 under the floor law (ADC_ROUND 0), a = (h * L) >> 20 with the half-LSB shift
//     h = ((F << 20) + L) / (2L) under half_up (ADC_ROUND 1, the threshold raised by h);
//   * the NMC: per output g = columns g*KW .. g*KW+KW-1 (weight planes q, binary format with
//     plane weights 1, 1, 2, 4, ...), one weight plane per clock:
//       scale = ((F << (S+1)) + L) / (2L)
//       est   = code * scale            (HALF_LSB: ((2 code + 1) * scale) >> 1)
//       dot   = 2 est - (A << S)              (A = level_sum)
//       acc   = sat_or_wrap(acc + (dot << (x_shift + wshift(q))), ACC_BITS)      (4.6)
//   * the output stage (4.6), registered at the end of every array cycle:
//       shift = SCALE_FRAC + den_bits - OUT_FRAC      (den_bits = log2(den_x * den_w))
//       y_int = sat(round(acc >> shift), OUT_BITS)     (shift <= 0: acc << -shift)
//     with OUT_ROUND 0 floor, 1 half up, 2 half to even; y_int is the output when the cycle
//     ends its group (last row tile, last input plane: golden-model.md's group_done).
//
// Broken variants for the scoreboard's own test (define one):
//   BUG_SAR_OFF_BY_ONE  the comparator uses > instead of >= (codes one low on boundaries)
//   BUG_DROP_MASK       masked rows are counted like active ones (at level 1)
//   BUG_OUT_FLOOR       the output stage truncates (floor) whatever OUT_ROUND says
//   BUG_A_ROWS          the Vref choice and the NMC use active_rows (rows driven) instead
//                       of the level sum A (no effect with binary rows)
//
// Handshake: pulse start for one clock with row_in, row_mask (LEVEL_BITS > 1: row_level),
// x_shift, clear (den_bits is held per MVM); the group
// is busy for ADC_BITS + KW + 2 clocks, then done is high for one clock with the results.
`timescale 1ns/1ps

module imc_colgroup #(
    parameter ROWS       = 64,
    parameter COLS       = 8,
    parameter KW         = 4,     // weight planes per output (binary:KW)
    parameter ADC_BITS   = 5,
    parameter SCALE_FRAC = 8,     // nmc.scale_frac_bits (S)
    parameter ACC_BITS   = 20,    // nmc.acc_bits
    parameter SATURATE   = 1,     // 1: saturate, 0: wrap
    parameter HALF_LSB   = 0,     // nmc.half_lsb_reconstruction
    parameter XSH_BITS   = 4,     // width of x_shift and den_bits
    parameter OUT_FRAC   = 12,    // nmc.out_frac_bits
    parameter OUT_BITS   = 48,    // nmc.out_bits
    parameter OUT_ROUND  = 2,     // nmc.out_rounding: 0 floor, 1 half_up, 2 half_even
    parameter LEVEL_BITS = 1,     // row DAC bits (input_bits); 1: binary rows from row_mask
    parameter ADC_ROUND  = 0,     // adc_rounding: 0 floor (MacroConfig default), 1 half_up (presets)
    // derived widths: leave at their defaults
    parameter ROW_BITS   = $clog2(ROWS + 1),                            // active_rows
    parameter CNT_BITS   = $clog2(ROWS * ((1 << LEVEL_BITS) - 1) + 1),  // level units
    parameter RA         = (ROWS > 1) ? $clog2(ROWS) : 1
) (
    input  wire                       clk,
    input  wire                       rst,
    // weight write port: one stored row per clock, column c at bit c (1 = +1)
    input  wire                       w_we,
    input  wire [RA-1:0]              w_addr,
    input  wire [COLS-1:0]            w_data,
    // Vref configuration: mode 0 fixed, 1 variable, 2 dual; levels in level units (rows
    // for binary rows)
    input  wire [1:0]                 vref_mode,
    input  wire [CNT_BITS-1:0]        vref_fixed,
    input  wire [CNT_BITS-1:0]        vref_low,
    input  wire [CNT_BITS-1:0]        vref_high,
    // one array cycle
    input  wire                       start,
    input  wire [ROWS-1:0]            row_in,
    input  wire [ROWS-1:0]            row_mask,   // 1 = active (LEVEL_BITS == 1 only)
    input  wire [ROWS*LEVEL_BITS-1:0] row_level,  // row r's level at [r*LEVEL_BITS +: LEVEL_BITS]
                                                  // (LEVEL_BITS > 1 only; 0 = masked)
    input  wire [XSH_BITS-1:0]        x_shift,    // log2 of the input plane weight
    input  wire                       clear,      // accumulators start from 0
    input  wire [XSH_BITS-1:0]        den_bits,   // log2(den_x * den_w) of the formats
    output wire                       busy,
    output reg                        done,
    output reg  [ROW_BITS-1:0]        active_rows, // rows driven (d_r > 0)
    output reg  [CNT_BITS-1:0]        level_sum,   // A = sum_r d_r (= active_rows, binary rows)
    output reg  [CNT_BITS-1:0]        full_scale,
    output reg  [COLS*CNT_BITS-1:0]   count,
    output reg  [COLS*ADC_BITS-1:0]   code,
    output reg  [COLS*ADC_BITS-1:0]   sar_dec,    // bit ADC_BITS-1-s: decision of step s
    output reg  [G*ACC_BITS-1:0]      acc,
    output reg  [G*OUT_BITS-1:0]      y_int       // output stage of acc (valid with done)
);
    localparam G        = COLS / KW;
    localparam L        = (1 << ADC_BITS) - 1;
    localparam CMP_BITS = CNT_BITS + ADC_BITS + 1;
    localparam SC_BITS  = CNT_BITS + SCALE_FRAC + 2;

    localparam S_IDLE = 3'd0, S_COUNT = 3'd1, S_SAR = 3'd2, S_NMC = 3'd3, S_DONE = 3'd4;

    reg [COLS-1:0]         wmem [0:ROWS-1];
    reg [2:0]              state;
    reg [ROWS-1:0]         in_q;
    reg [ROWS*LEVEL_BITS-1:0] lvl_q;             // latched levels (binary rows: the mask)
    reg [XSH_BITS-1:0]     xsh_q;
    reg [7:0]              step;
    reg [7:0]              q;

    assign busy = (state != S_IDLE);

    // row levels presented with start: the mask bits (LEVEL_BITS == 1) or row_level
    wire [ROWS*LEVEL_BITS-1:0] lvl_in;
    generate
        if (LEVEL_BITS == 1) begin : g_binary_rows
            assign lvl_in = row_mask;
        end else begin : g_level_rows
            assign lvl_in = row_level;
        end
    endgenerate

    // ---- XNOR cells, row levels and counts (combinational on the latched inputs) -------
    reg [COLS*CNT_BITS-1:0] cnt_comb;
    reg [CNT_BITS-1:0]      a_comb;      // level sum A
    reg [ROW_BITS-1:0]      n_comb;      // rows driven
    reg [CNT_BITS-1:0]      av;          // the A the Vref choice uses
    reg [CNT_BITS-1:0]      fs_comb;
    reg [CNT_BITS-1:0]      tmp_cnt;
    reg [LEVEL_BITS-1:0]    lv;
    integer r, c;
    always @* begin
        a_comb = 0;
        n_comb = 0;
        for (r = 0; r < ROWS; r = r + 1) begin
            lv     = lvl_q[r*LEVEL_BITS +: LEVEL_BITS];
            a_comb = a_comb + lv;
            n_comb = n_comb + (lv != 0);
        end
        for (c = 0; c < COLS; c = c + 1) begin
            tmp_cnt = 0;
            for (r = 0; r < ROWS; r = r + 1) begin
                lv = lvl_q[r*LEVEL_BITS +: LEVEL_BITS];
`ifdef BUG_DROP_MASK
                if (lv == 0)
                    lv = 1;                      // masked rows driven like level-1 rows
`endif
                if (in_q[r] ~^ wmem[r][c])
                    tmp_cnt = tmp_cnt + lv;
            end
            cnt_comb[c*CNT_BITS +: CNT_BITS] = tmp_cnt;
        end
        // full scale of the cycle (hardware-model.md 4.3, with A in level units 4.8)
`ifdef BUG_A_ROWS
        av = n_comb;
`else
        av = a_comb;
`endif
        case (vref_mode)
            2'd0:    fs_comb = vref_fixed;
            2'd1:    fs_comb = (av > L) ? av : L;
            default: fs_comb = (av <= vref_low) ? vref_low : vref_high;
        endcase
    end

    // ---- SAR step (combinational for the current step) ---------------------------------
    reg [COLS*ADC_BITS-1:0] code_next, dec_next;
    reg [ADC_BITS-1:0]      trial;
    reg [CMP_BITS-1:0]      lhs, rhs;
    reg                     keep;
    reg [63:0]              half_lsb, addend;   // the ADC law's shift h and its addend a
    always @* begin
        code_next = code;
        dec_next  = sar_dec;
        half_lsb  = ((64'd0 + full_scale) * 64'd1048576 + L) / (2 * L);
        addend    = (ADC_ROUND == 1) ? ((half_lsb * L) >> 20) : 64'd0;
        for (c = 0; c < COLS; c = c + 1) begin
            trial = code[c*ADC_BITS +: ADC_BITS] | ({{(ADC_BITS-1){1'b0}}, 1'b1} << (ADC_BITS - 1 - step));
            lhs   = count[c*CNT_BITS +: CNT_BITS] * L + addend;
            rhs   = full_scale * trial;
`ifdef BUG_SAR_OFF_BY_ONE
            keep  = (lhs > rhs);
`else
            keep  = (lhs >= rhs);
`endif
            if (keep)
                code_next[c*ADC_BITS +: ADC_BITS] = trial;
            dec_next[c*ADC_BITS + ADC_BITS - 1 - step] = keep;
        end
    end

    // ---- NMC shift-add for weight plane q (combinational) ------------------------------
    reg [SC_BITS-1:0]       scale;
    reg [G*ACC_BITS-1:0]    acc_next;
    reg signed [63:0]       est, dot, term, sum, acc_old;
    reg [ADC_BITS-1:0]      cd;
    reg [7:0]               wsh;
    localparam signed [63:0] ACC_MAX = (64'sd1 <<< (ACC_BITS - 1)) - 1;
    localparam signed [63:0] ACC_MIN = -(64'sd1 <<< (ACC_BITS - 1));
    integer g;
    always @* begin
        scale    = (({{(SC_BITS-CNT_BITS){1'b0}}, full_scale} << (SCALE_FRAC + 1)) + L) / (2 * L);
        acc_next = acc;
        wsh      = (q < 2) ? 8'd0 : q - 8'd1;
        for (g = 0; g < G; g = g + 1) begin
            cd = code[(g*KW + q)*ADC_BITS +: ADC_BITS];
            if (HALF_LSB)
                est = ((2 * $signed({1'b0, cd}) + 1) * $signed({1'b0, scale})) >>> 1;
            else
                est = $signed({1'b0, cd}) * $signed({1'b0, scale});
`ifdef BUG_A_ROWS
            dot     = 2 * est - ($signed({1'b0, active_rows}) <<< SCALE_FRAC);
`else
            dot     = 2 * est - ($signed({1'b0, level_sum}) <<< SCALE_FRAC);
`endif
            term    = dot <<< (xsh_q + wsh);
            acc_old = $signed(acc[g*ACC_BITS +: ACC_BITS]);
            sum     = acc_old + term;
            if (SATURATE) begin
                if (sum > ACC_MAX)      sum = ACC_MAX;
                else if (sum < ACC_MIN) sum = ACC_MIN;
            end
            acc_next[g*ACC_BITS +: ACC_BITS] = sum[ACC_BITS-1:0];
        end
    end

    // ---- output stage (combinational on the final accumulators) ----------------------------
    reg [G*OUT_BITS-1:0]    y_next;
    reg signed [63:0]       yv, yfloor, yrem, yhalf;
    integer                 osh;
    localparam signed [63:0] OUT_MAX = (64'sd1 <<< (OUT_BITS - 1)) - 1;
    localparam signed [63:0] OUT_MIN = -(64'sd1 <<< (OUT_BITS - 1));
    always @* begin
        osh = SCALE_FRAC - OUT_FRAC + $signed({1'b0, den_bits});
        for (g = 0; g < G; g = g + 1) begin
            yv = $signed(acc[g*ACC_BITS +: ACC_BITS]);
            if (osh > 0) begin
                yfloor = yv >>> osh;
                yrem   = yv - (yfloor <<< osh);
                yhalf  = 64'sd1 <<< (osh - 1);
`ifdef BUG_OUT_FLOOR
                yv = yfloor;
`else
                if (OUT_ROUND == 1 && yrem >= yhalf)
                    yv = yfloor + 64'sd1;
                else if (OUT_ROUND == 2 && (yrem > yhalf || (yrem == yhalf && yfloor[0])))
                    yv = yfloor + 64'sd1;
                else
                    yv = yfloor;
`endif
            end else begin
                yv = yv <<< (-osh);
            end
            if (yv > OUT_MAX)      yv = OUT_MAX;
            else if (yv < OUT_MIN) yv = OUT_MIN;
            y_next[g*OUT_BITS +: OUT_BITS] = yv[OUT_BITS-1:0];
        end
    end

    // ---- sequencing ----------------------------------------------------------------------
    always @(posedge clk) begin
        if (w_we)
            wmem[w_addr] <= w_data;
        if (rst) begin
            state <= S_IDLE;
            done  <= 1'b0;
            acc   <= 0;
            y_int <= 0;
            step  <= 0;
            q     <= 0;
        end else begin
            done <= 1'b0;
            case (state)
                S_IDLE: if (start) begin
                    in_q   <= row_in;
                    lvl_q  <= lvl_in;
                    xsh_q  <= x_shift;
                    if (clear)
                        acc <= 0;
                    state  <= S_COUNT;
                end
                S_COUNT: begin
                    count       <= cnt_comb;
                    active_rows <= n_comb;
                    level_sum   <= a_comb;
                    full_scale  <= fs_comb;
                    code        <= 0;
                    sar_dec     <= 0;
                    step        <= 0;
                    state       <= S_SAR;
                end
                S_SAR: begin
                    code    <= code_next;
                    sar_dec <= dec_next;
                    step    <= step + 1;
                    if (step == ADC_BITS - 1) begin
                        q     <= 0;
                        state <= S_NMC;
                    end
                end
                S_NMC: begin
                    acc <= acc_next;
                    q   <= q + 1;
                    if (q == KW - 1)
                        state <= S_DONE;
                end
                S_DONE: begin
                    y_int <= y_next;
                    done  <= 1'b1;
                    state <= S_IDLE;
                end
                default: state <= S_IDLE;
            endcase
        end
    end
endmodule
